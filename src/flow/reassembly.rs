//! TCP stream reassembly for one direction of a connection: puts segments in order, absorbs
//! retransmissions, reports holes as gaps, and reports overlapping segments whose bytes disagree
//! (the signature of a TCP injection: the forged segment and the real one cover the same
//! sequence numbers with different content).
//!
//! Sequence numbers are mapped to 64-bit stream offsets relative to the first byte seen, so
//! wrap-around needs no special case. Memory is bounded: out-of-order data beyond the limits
//! forces a gap, never growth.

/// Bounds for one direction.
#[derive(Clone, Copy, Debug)]
pub struct ReassemblyLimits {
    /// Out-of-order bytes held while waiting for a hole to fill.
    pub max_pending_bytes: usize,
    /// Out-of-order segments held.
    pub max_pending_segments: usize,
    /// Recently delivered bytes kept to compare retransmissions against.
    pub recent_window: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_pending_bytes: 64 * 1024,
            max_pending_segments: 64,
            recent_window: 4096,
        }
    }
}

/// First size of the recent-bytes window (`remember`): an SMTP dialog up to STARTTLS fits.
const RECENT_FIRST: usize = 512;

/// Two versions of the same stream bytes that disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverlapConflict {
    /// Stream offset where the earlier version (the one that was kept) starts to overlap.
    pub original_offset: u64,
    /// Length of the earlier version's overlapping part.
    pub original_len: u64,
    /// Stream offset of the later segment.
    pub new_offset: u64,
    /// Length of the later segment.
    pub new_len: u64,
    /// Bytes in the overlap that differ.
    pub differing_bytes: u64,
}

/// What the reassembler hands to the protocol parser, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// In-order bytes starting at a stream offset.
    Data {
        /// Stream offset of `bytes[0]`.
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Bytes that will never be seen (capture loss, limits); the stream resumes after them.
    Gap {
        /// Stream offset where the hole starts.
        offset: u64,
        /// Length of the hole.
        len: u64,
    },
    /// A retransmission disagreed with what was already seen; the earlier bytes were kept.
    Conflict(OverlapConflict),
}

struct Pending {
    offset: u64,
    data: Vec<u8>,
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectionStats {
    /// Holes reported.
    pub gaps: u32,
    /// Bytes lost in holes.
    pub gap_bytes: u64,
    /// Segments that repeated bytes already seen.
    pub retransmissions: u32,
    /// Segments that arrived ahead of a hole.
    pub out_of_order: u32,
    /// Overlaps whose bytes could no longer be compared (older than the recent window).
    pub unverified_overlaps: u32,
    /// Bytes delivered in order.
    pub bytes: u64,
    /// Acknowledgments from the peer that moved its acknowledged offset forward (Zeek's
    /// `ack_events`): the denominator of the capture-loss estimate.
    pub acks: u32,
    /// Holes the peer acknowledged: it received bytes the capture never saw (Zeek's
    /// `gap_events`, "ACK above hole"), so they were lost between the wire and the sensor.
    pub acked_gaps: u32,
}

/// One direction of a TCP connection.
pub struct Reassembler {
    limits: ReassemblyLimits,
    started: bool,
    /// Sequence number of the next byte expected.
    next_seq: u32,
    /// Stream offset of `next_seq`.
    next_off: u64,
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// Ring of the most recently delivered bytes, ending at `next_off`.
    recent: Vec<u8>,
    recent_start: usize,
    keep_recent: bool,
    /// Highest stream offset the peer acknowledged.
    acked: u64,
    fin_offset: Option<u64>,
    /// Counters.
    pub stats: DirectionStats,
}

impl Reassembler {
    /// Heap bytes this direction holds: segments waiting behind a hole and the recent-bytes
    /// ring. Read before and after each segment, so the flow table keeps its total incrementally.
    pub fn heap_bytes(&self) -> usize {
        self.pending_bytes
            + self.pending.capacity() * std::mem::size_of::<Pending>()
            + self.recent.capacity()
    }

    /// A direction that has seen nothing yet.
    pub fn new(limits: ReassemblyLimits) -> Reassembler {
        Reassembler {
            limits,
            started: false,
            next_seq: 0,
            next_off: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            recent: Vec::new(),
            recent_start: 0,
            keep_recent: true,
            acked: 0,
            fin_offset: None,
            stats: DirectionStats::default(),
        }
    }

    /// True once a SYN or the first data segment fixed the sequence space.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Stream offset of the next byte expected.
    pub fn offset(&self) -> u64 {
        self.next_off
    }

    /// True when every byte up to the sender's FIN has been delivered.
    pub fn finished(&self) -> bool {
        self.fin_offset.is_some_and(|f| self.next_off >= f)
    }

    /// Whether to remember delivered bytes for retransmission comparison. The parser turns it
    /// off once the stream carries message bodies or ciphertext: those are never kept.
    pub fn set_keep_recent(&mut self, keep: bool) {
        if keep == self.keep_recent {
            return;
        }
        self.keep_recent = keep;
        if !keep {
            self.recent = Vec::new();
            self.recent_start = 0;
        }
    }

    fn offset_of(&self, seq: u32) -> Option<u64> {
        let rel = i64::from(seq.wrapping_sub(self.next_seq) as i32);
        u64::try_from(self.next_off as i64 + rel).ok()
    }

    /// Feeds one segment of this direction.
    pub fn segment<F>(&mut self, seq: u32, syn: bool, fin: bool, payload: &[u8], sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        if !self.started {
            if syn {
                self.next_seq = seq.wrapping_add(1);
            } else if !payload.is_empty() {
                // Mid-stream pickup: the first byte we see is the start of our stream.
                self.next_seq = seq;
            } else {
                return;
            }
            self.started = true;
        }
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        let Some(offset) = self.offset_of(seq) else {
            return;
        };
        if fin {
            let fin_at = offset + payload.len() as u64;
            self.fin_offset = Some(self.fin_offset.map_or(fin_at, |f| f.min(fin_at)));
        }
        if !payload.is_empty() {
            self.data(offset, payload, sink);
        }
        self.check_acked_gap(sink);
    }

    /// The segment just fed at `seq` lost its last `missing` bytes to the snap length: when its
    /// captured bytes were delivered in order, the rest is a hole known now, and it is not
    /// capture loss (no `acked_gaps`, which the peer's acknowledgment would otherwise count).
    pub fn snapped<F>(&mut self, seq: u32, syn: bool, captured: usize, missing: u32, sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        if missing == 0 || !self.started {
            return;
        }
        let Some(offset) = self.offset_of(seq) else {
            return;
        };
        let end = offset + captured as u64;
        if self.next_off == end {
            self.gap_to(end + u64::from(missing), sink);
            self.drain(sink);
        }
    }

    /// Notes the peer's acknowledgment: data it acknowledged that we never saw is a gap.
    pub fn peer_ack<F>(&mut self, ack: u32, sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        if !self.started {
            return;
        }
        if let Some(off) = self.offset_of(ack)
            && off > self.acked
        {
            self.acked = off;
            self.stats.acks += 1;
            self.check_acked_gap(sink);
        }
    }

    fn check_acked_gap<F>(&mut self, sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        // Only declare a gap when something waits behind it: an acknowledgment can overtake
        // its data in a capture taken on a multi-queue card.
        if let Some(first) = self.pending.first()
            && self.acked > self.next_off
        {
            let hole_end = first.offset.min(self.acked);
            self.stats.acked_gaps += 1;
            self.gap_to(hole_end, sink);
            self.drain(sink);
        }
    }

    fn data<F>(&mut self, mut offset: u64, mut payload: &[u8], sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        let end = offset + payload.len() as u64;
        if offset < self.next_off {
            self.stats.retransmissions += 1;
            let overlap_end = end.min(self.next_off);
            let overlap = &payload[..(overlap_end - offset) as usize];
            self.compare_with_recent(offset, overlap, offset, payload.len() as u64, sink);
            if end <= self.next_off {
                return;
            }
            payload = &payload[(self.next_off - offset) as usize..];
            offset = self.next_off;
        }
        if offset == self.next_off {
            self.deliver(payload, sink);
            self.drain(sink);
            return;
        }
        self.stats.out_of_order += 1;
        self.store_pending(offset, payload, sink);
        while self.pending_bytes > self.limits.max_pending_bytes
            || self.pending.len() > self.limits.max_pending_segments
        {
            let Some(first) = self.pending.first().map(|p| p.offset) else {
                break;
            };
            self.gap_to(first, sink);
            self.drain(sink);
        }
    }

    fn store_pending<F>(&mut self, offset: u64, payload: &[u8], sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        let end = offset + payload.len() as u64;
        for p in &self.pending {
            let p_end = p.offset + p.data.len() as u64;
            if offset < p_end && p.offset < end {
                let start = offset.max(p.offset);
                let stop = end.min(p_end);
                let old = &p.data[(start - p.offset) as usize..(stop - p.offset) as usize];
                let new = &payload[(start - offset) as usize..(stop - offset) as usize];
                let differing = old.iter().zip(new).filter(|(a, b)| a != b).count() as u64;
                if differing > 0 {
                    sink(StreamEvent::Conflict(OverlapConflict {
                        original_offset: start,
                        original_len: stop - start,
                        new_offset: offset,
                        new_len: payload.len() as u64,
                        differing_bytes: differing,
                    }));
                }
                if offset >= p.offset && end <= p_end {
                    self.stats.retransmissions += 1;
                    return;
                }
            }
        }
        let at = self.pending.partition_point(|p| p.offset <= offset);
        self.pending.insert(
            at,
            Pending {
                offset,
                data: payload.to_vec(),
            },
        );
        self.pending_bytes += payload.len();
    }

    fn compare_with_recent<F>(
        &mut self,
        offset: u64,
        bytes: &[u8],
        new_offset: u64,
        new_len: u64,
        sink: &mut F,
    ) where
        F: FnMut(StreamEvent<'_>),
    {
        let window_start = self.next_off - self.recent.len() as u64;
        if offset < window_start || self.recent.is_empty() {
            self.stats.unverified_overlaps += 1;
            return;
        }
        let cap = self.recent.len();
        let mut differing = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            let idx = (offset - window_start) as usize + i;
            let ring = (self.recent_start + idx) % cap;
            if self.recent[ring] != *b {
                differing += 1;
            }
        }
        if differing > 0 {
            sink(StreamEvent::Conflict(OverlapConflict {
                original_offset: offset,
                original_len: bytes.len() as u64,
                new_offset,
                new_len,
                differing_bytes: differing,
            }));
        }
    }

    fn deliver<F>(&mut self, bytes: &[u8], sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        if bytes.is_empty() {
            return;
        }
        sink(StreamEvent::Data {
            offset: self.next_off,
            bytes,
        });
        self.remember(bytes);
        self.next_off += bytes.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(bytes.len() as u32);
        self.stats.bytes += bytes.len() as u64;
    }

    fn remember(&mut self, bytes: &[u8]) {
        let cap = self.limits.recent_window;
        if !self.keep_recent || cap == 0 {
            return;
        }
        let tail = &bytes[bytes.len().saturating_sub(cap)..];
        // Until the ring is full it is filled from 0 and starts there; after that the oldest
        // bytes, from `recent_start` on, are overwritten in at most two runs.
        let fill = tail.len().min(cap - self.recent.len());
        let len = self.recent.len();
        if len + fill > self.recent.capacity() {
            // Grown from a first size that holds a typical SMTP dialog, doubling up to the
            // limit and never past it: byte-by-byte pushes from eight bytes cost up to ten
            // reallocations per direction, and a window allocated whole holds 4 KiB for every
            // dialog of a few hundred bytes.
            let want = (self.recent.capacity() * 2)
                .max(RECENT_FIRST)
                .max(len + fill)
                .min(cap);
            self.recent.reserve_exact(want - len);
        }
        self.recent.extend_from_slice(&tail[..fill]);
        let mut rest = &tail[fill..];
        while !rest.is_empty() {
            let n = (cap - self.recent_start).min(rest.len());
            self.recent[self.recent_start..self.recent_start + n].copy_from_slice(&rest[..n]);
            self.recent_start = (self.recent_start + n) % cap;
            rest = &rest[n..];
        }
    }

    fn gap_to<F>(&mut self, offset: u64, sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        if offset <= self.next_off {
            return;
        }
        let len = offset - self.next_off;
        sink(StreamEvent::Gap {
            offset: self.next_off,
            len,
        });
        self.stats.gaps += 1;
        self.stats.gap_bytes += len;
        self.next_off = offset;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        // Bytes before a hole can no longer be compared by position.
        self.recent.clear();
        self.recent_start = 0;
    }

    fn drain<F>(&mut self, sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        while let Some(first) = self.pending.first() {
            if first.offset > self.next_off {
                break;
            }
            let p = self.pending.remove(0);
            self.pending_bytes -= p.data.len();
            let end = p.offset + p.data.len() as u64;
            if end <= self.next_off {
                continue;
            }
            let skip = (self.next_off - p.offset) as usize;
            self.deliver(&p.data[skip..], sink);
        }
    }

    /// Delivers everything still held, with gaps for the holes, and reports a final hole up to
    /// the FIN or the peer's last acknowledgment. Called when the connection ends.
    pub fn flush<F>(&mut self, sink: &mut F)
    where
        F: FnMut(StreamEvent<'_>),
    {
        // The peer acknowledged bytes that never came (the FIN, one sequence number, aside):
        // lost before the sensor, as in `check_acked_gap`.
        let acked = self.fin_offset.map_or(self.acked, |f| self.acked.min(f));
        if self.started && acked > self.next_off {
            self.stats.acked_gaps += 1;
        }
        while let Some(first) = self.pending.first() {
            let to = first.offset;
            self.gap_to(to, sink);
            self.drain(sink);
        }
        // The FIN takes one sequence number, which the peer acknowledges: not a hole.
        let end = self.fin_offset.unwrap_or(self.acked);
        if self.started && end > self.next_off {
            self.gap_to(end, sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collected {
        bytes: Vec<u8>,
        gaps: Vec<(u64, u64)>,
        conflicts: Vec<OverlapConflict>,
    }

    fn feed(r: &mut Reassembler, out: &mut Collected, seq: u32, data: &[u8]) {
        r.segment(seq, false, false, data, &mut |e| match e {
            StreamEvent::Data { bytes, .. } => out.bytes.extend_from_slice(bytes),
            StreamEvent::Gap { offset, len } => out.gaps.push((offset, len)),
            StreamEvent::Conflict(c) => out.conflicts.push(c),
        });
    }

    #[test]
    fn orders_segments_across_wraparound() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Collected::default();
        let isn = u32::MAX - 3;
        r.segment(isn, true, false, &[], &mut |_| {});
        let start = isn.wrapping_add(1);
        feed(&mut r, &mut out, start.wrapping_add(5), b"world");
        feed(&mut r, &mut out, start, b"hello");
        feed(&mut r, &mut out, start, b"hello"); // retransmission
        assert_eq!(out.bytes, b"helloworld");
        assert!(out.gaps.is_empty());
        assert!(out.conflicts.is_empty());
        assert_eq!(r.stats.retransmissions, 1);
    }

    #[test]
    fn a_snapped_tail_is_a_hole_at_once_and_no_acked_gap() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Collected::default();
        feed(&mut r, &mut out, 100, b"250-mx");
        // 94 more bytes were on the wire.
        r.snapped(100, false, 6, 94, &mut |e| {
            if let StreamEvent::Gap { offset, len } = e {
                out.gaps.push((offset, len));
            }
        });
        assert_eq!(out.gaps, [(6, 94)]);
        r.peer_ack(200, &mut |_| {});
        feed(&mut r, &mut out, 200, b"220 ok\r\n");
        assert_eq!(out.bytes, b"250-mx220 ok\r\n");
        assert_eq!(out.gaps.len(), 1);
        assert_eq!(r.stats.acked_gaps, 0);
    }

    #[test]
    fn disagreeing_retransmission_is_a_conflict() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Collected::default();
        feed(&mut r, &mut out, 100, b"250-STARTTLS\r\n");
        feed(&mut r, &mut out, 100, b"250-XXXXXXXA\r\n");
        assert_eq!(out.conflicts.len(), 1);
        assert_eq!(out.conflicts[0].differing_bytes, 8);
        assert_eq!(out.bytes, b"250-STARTTLS\r\n");
    }

    #[test]
    fn pending_conflict_and_forced_gap() {
        let limits = ReassemblyLimits {
            max_pending_bytes: 10,
            ..ReassemblyLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let mut out = Collected::default();
        feed(&mut r, &mut out, 0, b"a");
        feed(&mut r, &mut out, 5, b"xyz");
        feed(&mut r, &mut out, 5, b"xqz");
        assert_eq!(out.conflicts.len(), 1);
        feed(&mut r, &mut out, 20, b"0123456789");
        // Over the limit: the first hole is given up, what waited behind it is delivered.
        assert_eq!(out.gaps, vec![(1, 4)]);
        assert_eq!(out.bytes, b"axyz");
        r.flush(&mut |e| match e {
            StreamEvent::Data { bytes, .. } => out.bytes.extend_from_slice(bytes),
            StreamEvent::Gap { offset, len } => out.gaps.push((offset, len)),
            StreamEvent::Conflict(c) => out.conflicts.push(c),
        });
        assert_eq!(out.gaps, vec![(1, 4), (8, 12)]);
        assert_eq!(out.bytes, b"axyz0123456789");
    }

    #[test]
    fn ack_beyond_a_hole_releases_waiting_data() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Collected::default();
        feed(&mut r, &mut out, 0, b"MAIL\r\n");
        feed(&mut r, &mut out, 12, b"DATA\r\n");
        assert_eq!(out.bytes, b"MAIL\r\n");
        r.peer_ack(18, &mut |e| {
            if let StreamEvent::Data { bytes, .. } = e {
                out.bytes.extend_from_slice(bytes)
            }
        });
        assert_eq!(out.bytes, b"MAIL\r\nDATA\r\n");
        assert_eq!(r.stats.gaps, 1);
        // The capture-loss estimate: one acknowledgment of new data, above one hole.
        assert_eq!((r.stats.acks, r.stats.acked_gaps), (1, 1));
        // Acknowledging what was seen is no loss.
        r.peer_ack(18, &mut |_| {});
        let mut clean = Reassembler::new(ReassemblyLimits::default());
        feed(&mut clean, &mut out, 0, b"MAIL\r\n");
        clean.peer_ack(6, &mut |_| {});
        clean.flush(&mut |_| {});
        assert_eq!((clean.stats.acks, clean.stats.acked_gaps), (1, 0));
    }

    #[test]
    fn hostile_sequence_numbers_do_not_grow_memory() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = Collected::default();
        feed(&mut r, &mut out, 0, b"x");
        for i in 0..10_000u32 {
            feed(&mut r, &mut out, i.wrapping_mul(2_654_435_761), &[0u8; 100]);
            assert!(r.pending_bytes <= 64 * 1024 + 100);
        }
    }

    /// The ring filled in runs holds the same bytes in the same places as one filled byte by
    /// byte (how it was written before), however the deliveries are cut.
    #[test]
    fn recent_window_in_runs_equals_byte_by_byte() {
        let stream: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (cap, cut) in [16, 3000, 4096]
            .into_iter()
            .flat_map(|cap| [1, 3, 5, 15, 16, 17, 40, 200, 700, 5000].map(|cut| (cap, cut)))
        {
            let limits = ReassemblyLimits {
                recent_window: cap,
                ..ReassemblyLimits::default()
            };
            let mut r = Reassembler::new(limits);
            let (mut model, mut start) = (Vec::new(), 0usize);
            for chunk in stream.chunks(cut) {
                r.remember(chunk);
                for &b in &chunk[chunk.len().saturating_sub(cap)..] {
                    if model.len() < cap {
                        model.push(b);
                    } else {
                        model[start] = b;
                        start = (start + 1) % cap;
                    }
                }
                assert_eq!((&r.recent, r.recent_start), (&model, start), "{cap} {cut}");
                assert!(r.recent.capacity() <= cap);
            }
        }
    }
}
