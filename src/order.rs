//! Merges the workers' outputs into one stream in capture order. Each worker stamps what it
//! produces with its own capture time and reports how far it has read; a record is handed on
//! only once every worker has read past its stamp, so the cross-client judgements downstream
//! (MX answers compared between clients, per-server baselines) see the same order on every run,
//! whatever the thread scheduling.

use crate::dns::DnsRecord;
use crate::event::SessionRecord;
use crate::flow::table::Outputs;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// One record produced by a worker.
pub enum Produced {
    /// A finished SMTP session.
    Session(Box<SessionRecord>),
    /// A finished DNS transaction of interest.
    Dns(Box<DnsRecord>),
}

struct Item {
    at_us: i64,
    worker: usize,
    seq: u64,
    what: Produced,
}

impl Item {
    fn key(&self) -> (i64, usize, u64) {
        (self.at_us, self.worker, self.seq)
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
    watermarks: Vec<i64>,
    seqs: Vec<u64>,
    heap: BinaryHeap<Reverse<Item>>,
}

impl CaptureOrder {
    /// A merge of `workers` streams, none of which has reported yet.
    pub fn new(workers: usize) -> CaptureOrder {
        CaptureOrder {
            watermarks: vec![i64::MIN; workers],
            seqs: vec![0; workers],
            heap: BinaryHeap::new(),
        }
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
            self.add(worker, at_us, Produced::Dns(Box::new(rec)));
        }
        for (i, rec) in sessions.into_iter().enumerate() {
            let at_us = session_at.get(i).copied().unwrap_or(fallback);
            self.add(worker, at_us, Produced::Session(Box::new(rec)));
        }
        if let Some(w) = self.watermarks.get_mut(worker) {
            *w = (*w).max(watermark_us);
        }
    }

    fn add(&mut self, worker: usize, at_us: i64, what: Produced) {
        let seq = self.seqs[worker];
        self.seqs[worker] += 1;
        self.heap.push(Reverse(Item {
            at_us,
            worker,
            seq,
            what,
        }));
    }

    /// The next record every worker has read past, if any.
    pub fn pop_ready(&mut self) -> Option<Produced> {
        let low = self.watermarks.iter().copied().min().unwrap_or(i64::MAX);
        if self.heap.peek().is_some_and(|Reverse(i)| i.at_us <= low) {
            self.heap.pop().map(|Reverse(i)| i.what)
        } else {
            None
        }
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
            o.dns.push(DnsRecord::for_tests(t));
            o.dns_at.push(t);
        }
        o
    }

    fn drain(order: &mut CaptureOrder) -> Vec<i64> {
        let mut v = Vec::new();
        while let Some(p) = order.pop_ready() {
            if let Produced::Dns(d) = p {
                v.push(d.ts_us);
            }
        }
        v
    }

    #[test]
    fn releases_in_capture_order_once_every_worker_has_passed() {
        let mut order = CaptureOrder::new(2);
        order.push(1, dns_at(&[5, 9], 10));
        assert!(drain(&mut order).is_empty(), "worker 0 has not reported");
        order.push(0, dns_at(&[3, 7], 8));
        assert_eq!(drain(&mut order), vec![3, 5, 7]);
        order.push(0, dns_at(&[], i64::MAX));
        assert_eq!(drain(&mut order), vec![9]);
        assert_eq!(order.waiting(), 0);
    }
}
