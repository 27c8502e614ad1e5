//! The memory budget (`--memory-limit`): every piece of state that grows with the traffic is a
//! *window*, bounded by a count (its own option or constant) and by a share of the budget in
//! bytes. Each window keeps its own byte count incrementally (added when an entry comes, taken
//! off when it goes), so staying within the budget never walks all state per packet.
//!
//! The stages that own windows (each worker, the output stage) publish their sizes into
//! [`Gauges`] — relaxed atomics, written once per batch — so that `--metrics` can read them from
//! another thread, and the summary sums them at the end.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The default budget: enough for tens of thousands of concurrent flows, and small enough that a
/// sensor's resident memory stays far below what a small machine has.
pub const DEFAULT_LIMIT: u64 = 160 << 20;

/// The smallest budget accepted; below it even a handful of flows would not fit.
pub const MIN_LIMIT: u64 = 64 << 10;

/// A piece of state that grows with the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Window {
    /// The workers' flow tables, reassembly buffers included.
    Flows,
    /// The workers' DNS queries waiting for answers and answers within their comparison window.
    DnsPending,
    /// The workers' per-client DNS memory (MX, address, TLSA answers; resolver TTL lineage).
    DnsClients,
    /// The capture-order merge buffer of the output stage.
    Order,
    /// Sessions the correlator holds for cross-session judgement.
    Held,
    /// Sessions waiting for their DNS lookups' records, and the lookups' finding ids seen.
    DnsWait,
    /// The DNS judge's MX answers and signed names (`--mx-compare-window`).
    MxAnswers,
    /// Distinct certificates and the keys each server presented.
    Certificates,
    /// Servers that offered STARTTLS and failed upgrades per client/server pair.
    Offers,
    /// The workers' per-client MTA-STS memory: `_mta-sts` TXT answers, policy-host addresses
    /// and TCP/443 connections waiting to be linked to a delivery.
    StsClients,
    /// The domains that published `v=STSv1` in this run, with their policy ids (the MTA-STS
    /// judge of the output stage).
    StsDomains,
}

impl Window {
    /// Every window, in the order they are reported.
    pub const ALL: [Window; 11] = [
        Window::Flows,
        Window::DnsPending,
        Window::DnsClients,
        Window::Order,
        Window::Held,
        Window::DnsWait,
        Window::MxAnswers,
        Window::Certificates,
        Window::Offers,
        Window::StsClients,
        Window::StsDomains,
    ];

    /// The name in `summary.json` and in the metrics' `window` label.
    pub fn name(self) -> &'static str {
        match self {
            Window::Flows => "flows",
            Window::DnsPending => "dns_pending",
            Window::DnsClients => "dns_clients",
            Window::Order => "order",
            Window::Held => "held_sessions",
            Window::DnsWait => "dns_wait",
            Window::MxAnswers => "mx_answers",
            Window::Certificates => "certificates",
            Window::Offers => "offers",
            Window::StsClients => "sts_clients",
            Window::StsDomains => "sts_domains",
        }
    }

    /// Share of the budget, in thousandths. Flows get the most: a live sensor with thousands of
    /// concurrent flows must not lose active ones, and a flow costs a few kB (its parser state
    /// and up to `--max-flow-buffer` per direction) while a held record costs about one. The
    /// shares add up to 1000.
    fn share_permille(self) -> u64 {
        match self {
            Window::Flows => 400,
            Window::DnsPending => 60,
            Window::DnsClients => 100,
            Window::Order => 60,
            Window::Held => 150,
            Window::DnsWait => 60,
            Window::MxAnswers => 50,
            Window::Certificates => 50,
            Window::Offers => 40,
            Window::StsClients => 20,
            Window::StsDomains => 10,
        }
    }

    /// True for windows every worker has one of (their share is divided among the workers).
    fn per_worker(self) -> bool {
        matches!(
            self,
            Window::Flows | Window::DnsPending | Window::DnsClients | Window::StsClients
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The budget, shared out among the windows.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    total: u64,
    workers: u64,
}

impl Budget {
    /// `total` bytes for a run with `workers` workers.
    pub fn new(total: u64, workers: usize) -> Budget {
        Budget {
            total,
            workers: workers.max(1) as u64,
        }
    }

    /// The whole budget.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes one owner of `window` may use (a worker's part for per-worker windows).
    pub fn limit(&self, window: Window) -> usize {
        let share = (self.total / 1000).saturating_mul(window.share_permille());
        let share = if window.per_worker() {
            share / self.workers
        } else {
            share
        };
        usize::try_from(share).unwrap_or(usize::MAX).max(1)
    }
}

/// Size and evictions of one window, as one owner keeps it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Entries held.
    pub entries: usize,
    /// Bytes held (estimated: the entries' heap data and their fixed size).
    pub bytes: usize,
    /// Entries dropped, released early or refused to stay within the count or the bytes.
    pub evictions: u64,
    /// Judgements not made because the state they rest on was evicted.
    pub skipped: u64,
}

/// Forgets the least recently active tenth of `map` (at least one entry when it has any): every
/// entry whose `age` is at or below the tenth-smallest age goes, with its `bytes` and its count
/// taken off `usage` and its eviction counted there; `on_evict` sees each as it goes. Returns
/// how many went. A tenth at a time amortises the selection, which visits every entry, over the
/// inserts that fill the room again. Every window that evicts by age uses this one rule.
pub fn evict_oldest_tenth<K, V>(
    map: &mut ahash::AHashMap<K, V>,
    usage: &mut Usage,
    age: impl Fn(&V) -> i64,
    bytes: impl Fn(&K, &V) -> usize,
    mut on_evict: impl FnMut(&K, &V),
) -> u64 {
    let mut ages: Vec<i64> = map.values().map(&age).collect();
    if ages.is_empty() {
        return 0;
    }
    let cut = ages.len() / 10;
    let (_, pivot, _) = ages.select_nth_unstable(cut);
    let pivot = *pivot;
    let before = map.len();
    map.retain(|k, v| {
        let keep = age(v) > pivot;
        if !keep {
            usage.entries = usage.entries.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(bytes(k, v));
            on_evict(k, v);
        }
        keep
    });
    let gone = (before - map.len()) as u64;
    usage.evictions += gone;
    gone
}

/// One window's live gauges.
#[derive(Default)]
struct WindowGauge {
    entries: AtomicU64,
    bytes: AtomicU64,
    peak: AtomicU64,
    limit: AtomicU64,
    evictions: AtomicU64,
    skipped: AtomicU64,
}

/// The gauges of one stage (a worker or the output stage): written by that stage only, read by
/// anyone.
#[derive(Default)]
pub struct Gauges {
    windows: [WindowGauge; Window::ALL.len()],
}

impl Gauges {
    /// Sets the byte limit `window` has in this stage.
    pub fn set_limit(&self, window: Window, limit: usize) {
        self.windows[window.index()]
            .limit
            .store(limit as u64, Ordering::Relaxed);
    }

    /// Publishes `window`'s current size.
    pub fn publish(&self, window: Window, usage: Usage) {
        let g = &self.windows[window.index()];
        g.entries.store(usage.entries as u64, Ordering::Relaxed);
        g.bytes.store(usage.bytes as u64, Ordering::Relaxed);
        g.peak.fetch_max(usage.bytes as u64, Ordering::Relaxed);
        g.evictions.store(usage.evictions, Ordering::Relaxed);
        g.skipped.store(usage.skipped, Ordering::Relaxed);
    }
}

/// Every stage's gauges: what the metrics endpoint and the summary read.
#[derive(Default)]
pub struct Board {
    stages: std::sync::Mutex<Vec<Arc<Gauges>>>,
}

impl Board {
    /// Gauges for one more stage.
    pub fn stage(&self) -> Arc<Gauges> {
        let g = Arc::new(Gauges::default());
        if let Ok(mut stages) = self.stages.lock() {
            stages.push(g.clone());
        }
        g
    }

    /// The windows' sizes summed over all stages. The peak is the sum of each stage's peak (an
    /// upper bound of the true peak, as the stages peak at different times).
    pub fn snapshot(&self) -> MemoryStats {
        let mut windows = BTreeMap::new();
        let stages = self.stages.lock().map(|s| s.clone()).unwrap_or_default();
        for w in Window::ALL {
            let mut row = WindowRow::default();
            let mut owned = false;
            for s in &stages {
                let g = &s.windows[w.index()];
                let limit = g.limit.load(Ordering::Relaxed);
                if limit == 0 {
                    continue;
                }
                owned = true;
                row.entries += g.entries.load(Ordering::Relaxed);
                row.bytes += g.bytes.load(Ordering::Relaxed);
                row.peak_bytes += g.peak.load(Ordering::Relaxed);
                row.limit_bytes += limit;
                row.evictions += g.evictions.load(Ordering::Relaxed);
                row.skipped_judgements += g.skipped.load(Ordering::Relaxed);
            }
            if owned {
                windows.insert(w.name(), row);
            }
        }
        MemoryStats {
            limit_bytes: 0,
            windows,
        }
    }
}

/// One window in the summary.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct WindowRow {
    /// Entries held at the end (or now).
    pub entries: u64,
    /// Bytes held at the end (or now).
    pub bytes: u64,
    /// The most bytes held at once.
    pub peak_bytes: u64,
    /// The window's share of the budget.
    pub limit_bytes: u64,
    /// Entries evicted, released early or refused to stay within bounds.
    pub evictions: u64,
    /// Judgements not made because the state they rest on was evicted (`dns_clients`:
    /// `smtp-to-unlisted-ip` for a client whose DNS memory was evicted within `--mx-window`).
    pub skipped_judgements: u64,
}

/// The `memory` object of `summary.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryStats {
    /// `--memory-limit`.
    pub limit_bytes: u64,
    /// Per window.
    pub windows: BTreeMap<&'static str, WindowRow>,
}

impl MemoryStats {
    /// Evictions of all windows together.
    pub fn evictions(&self) -> u64 {
        self.windows.values().map(|w| w.evictions).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_split_among_workers() {
        let sum: u64 = Window::ALL.iter().map(|w| w.share_permille()).sum();
        assert_eq!(sum, 1000);
        let one = Budget::new(1 << 30, 1);
        let two = Budget::new(1 << 30, 2);
        assert_eq!(one.limit(Window::Flows), 2 * two.limit(Window::Flows));
        assert_eq!(one.limit(Window::Held), two.limit(Window::Held));
        assert!(Budget::new(1, 4).limit(Window::Order) >= 1);
    }

    #[test]
    fn the_board_sums_stages_and_keeps_peaks() {
        let board = Board::default();
        let (a, b) = (board.stage(), board.stage());
        for g in [&a, &b] {
            g.set_limit(Window::Flows, 100);
        }
        a.publish(
            Window::Flows,
            Usage {
                entries: 3,
                bytes: 90,
                evictions: 1,
                skipped: 0,
            },
        );
        a.publish(
            Window::Flows,
            Usage {
                entries: 1,
                bytes: 30,
                evictions: 2,
                skipped: 0,
            },
        );
        b.publish(
            Window::Flows,
            Usage {
                entries: 2,
                bytes: 20,
                evictions: 0,
                skipped: 0,
            },
        );
        let s = board.snapshot();
        let f = s.windows["flows"];
        assert_eq!((f.entries, f.bytes, f.peak_bytes), (3, 50, 110));
        assert_eq!((f.limit_bytes, f.evictions), (200, 2));
        assert!(!s.windows.contains_key("held_sessions"));
    }
}
