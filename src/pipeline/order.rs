//! Merges the workers' outputs into one stream in capture order. Each worker stamps what it
//! produces with its own capture time and reports how far it has read. Stamps are grouped into
//! buckets of a few seconds; a bucket is handed on once every worker has read past it, and
//! within a bucket records go in the order of their own time (a DNS transaction is written a
//! few seconds after its answer, a session when it ends). So the cross-client judgements
//! downstream (MX answers compared between clients, per-server baselines) see the same order on
//! every run, whatever the thread scheduling, and nearly the order of the capture.

use super::worker::Outputs;
use crate::memory::Usage;
use crate::record::{DnsRecord, SessionRecord, dns_bytes, session_bytes};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::mem::size_of;

/// One record produced by a worker.
pub enum Produced {
    /// A finished SMTP session.
    Session(Box<SessionRecord>),
    /// A finished DNS transaction of interest.
    Dns(Box<DnsRecord>),
}

/// Bytes a waiting record occupies (its box included).
fn produced_bytes(p: &Produced) -> usize {
    size_of::<Item>()
        + match p {
            Produced::Session(r) => session_bytes(r),
            Produced::Dns(r) => dns_bytes(r),
        }
}

/// Width of a release bucket (capture time): longer than the delay with which a worker writes
/// a DNS transaction after its answer, so that lookups meet in answer order.
const BUCKET_US: i64 = 10_000_000;

struct Item {
    /// `produced_bytes` of `what` as counted in, counted out with it.
    bytes: usize,
    bucket: i64,
    event_us: i64,
    worker: usize,
    seq: u64,
    what: Produced,
}

impl Item {
    fn key(&self) -> (i64, i64, usize, u64) {
        (self.bucket, self.event_us, self.worker, self.seq)
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Item {}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The merge of all workers' streams.
pub struct CaptureOrder {
    /// Bytes of waiting records at most (the memory budget's share): beyond it the earliest is
    /// released before every worker has passed it.
    max_bytes: usize,
    usage: Usage,
    bucket_us: i64,
    watermarks: Vec<i64>,
    seqs: Vec<u64>,
    heap: BinaryHeap<Reverse<Item>>,
}

impl CaptureOrder {
    /// A merge of `workers` streams, none of which has reported yet.
    pub fn new(workers: usize) -> CaptureOrder {
        CaptureOrder::with_bucket(workers, BUCKET_US)
    }

    /// As [`CaptureOrder::new`] with buckets of `bucket_us` (live capture uses shorter ones, so
    /// that records reach the files within seconds).
    pub fn with_bucket(workers: usize, bucket_us: i64) -> CaptureOrder {
        CaptureOrder {
            max_bytes: usize::MAX,
            usage: Usage::default(),
            bucket_us: bucket_us.max(1),
            watermarks: vec![i64::MIN; workers],
            seqs: vec![0; workers],
            heap: BinaryHeap::new(),
        }
    }

    /// Bounds the waiting records to `bytes`.
    pub fn with_max_bytes(mut self, bytes: usize) -> CaptureOrder {
        self.max_bytes = bytes;
        self
    }

    /// Size of the waiting records, and how many were released early for the bound.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Takes one chunk from `worker`. Within a worker, DNS records go before the sessions of the
    /// same instant, so a session meets the lookup that led to it.
    pub fn push(&mut self, worker: usize, chunk: Outputs) {
        let Outputs {
            sessions,
            dns,
            session_at,
            dns_at,
            watermark_us,
        } = chunk;
        let fallback = watermark_us;
        for (i, rec) in dns.into_iter().enumerate() {
            let at_us = dns_at.get(i).copied().unwrap_or(fallback);
            let event_us = rec.ts.0;
            self.add(worker, at_us, event_us, Produced::Dns(rec));
        }
        for (i, rec) in sessions.into_iter().enumerate() {
            let at_us = session_at.get(i).copied().unwrap_or(fallback);
            let event_us = rec.ts_end.0;
            self.add(worker, at_us, event_us, Produced::Session(rec));
        }
        if let Some(w) = self.watermarks.get_mut(worker) {
            *w = (*w).max(watermark_us);
        }
    }

    fn add(&mut self, worker: usize, at_us: i64, event_us: i64, what: Produced) {
        let seq = self.seqs[worker];
        self.seqs[worker] += 1;
        let bytes = produced_bytes(&what);
        self.usage.entries += 1;
        self.usage.bytes += bytes;
        self.heap.push(Reverse(Item {
            bytes,
            bucket: at_us.div_euclid(self.bucket_us),
            event_us,
            worker,
            seq,
            what,
        }));
    }

    /// The next record every worker has read past, if any.
    pub fn pop_ready(&mut self) -> Option<Produced> {
        let low = self.low_watermark();
        let passed = |bucket: i64| {
            low == i64::MAX
                || bucket
                    .saturating_add(1)
                    .saturating_mul(self.bucket_us)
                    .saturating_sub(1)
                    <= low
        };
        let ready = self.heap.peek().is_some_and(|Reverse(i)| passed(i.bucket));
        let over = !ready && self.usage.bytes > self.max_bytes && !self.heap.is_empty();
        if !ready && !over {
            return None;
        }
        if over {
            // Out of capture order only under memory pressure, and counted.
            self.usage.evictions += 1;
        }
        let Reverse(item) = self.heap.pop()?;
        self.usage.entries -= 1;
        self.usage.bytes -= item.bytes;
        Some(item.what)
    }

    /// The capture time every worker has read past (`i64::MIN` before all have reported).
    pub fn low_watermark(&self) -> i64 {
        self.watermarks.iter().copied().min().unwrap_or(i64::MAX)
    }

    /// Records waiting for a slower worker.
    pub fn waiting(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_at(at: &[i64], watermark_us: i64) -> Outputs {
        let mut o = Outputs {
            watermark_us,
            ..Outputs::default()
        };
        for &t in at {
            o.dns.push(Box::new(DnsRecord::for_tests(t)));
            o.dns_at.push(t);
        }
        o
    }

    fn drain(order: &mut CaptureOrder) -> Vec<i64> {
        let mut v = Vec::new();
        while let Some(p) = order.pop_ready() {
            if let Produced::Dns(d) = p {
                v.push(d.ts.0);
            }
        }
        v
    }

    const S: i64 = 1_000_000;

    #[test]
    fn releases_in_capture_order_once_every_worker_has_passed() {
        let mut order = CaptureOrder::new(2);
        order.push(1, dns_at(&[5 * S, 25 * S], 30 * S));
        assert!(drain(&mut order).is_empty(), "worker 0 has not reported");
        order.push(0, dns_at(&[3 * S, 7 * S], 12 * S));
        assert_eq!(drain(&mut order), vec![3 * S, 5 * S, 7 * S]);
        order.push(0, dns_at(&[], i64::MAX));
        assert_eq!(drain(&mut order), vec![25 * S]);
        assert_eq!(order.waiting(), 0);
    }

    #[test]
    fn records_written_together_go_in_their_own_time_order() {
        let mut order = CaptureOrder::new(2);
        // Both workers write everything at the end of the input, at the same capture time.
        let mut late = dns_at(&[9 * S, S], i64::MAX);
        late.dns_at = vec![50 * S; 2];
        let mut early = dns_at(&[4 * S], i64::MAX);
        early.dns_at = vec![50 * S];
        order.push(0, late);
        order.push(1, early);
        assert_eq!(drain(&mut order), vec![S, 4 * S, 9 * S]);
    }
}
