//! The flow table of one worker: finds the connection of each TCP packet, reassembles both
//! directions, expires idle flows by capture time and evicts the oldest when full.
//!
//! It knows TCP and nothing above it. Which flows to follow, what their bytes mean and what a
//! finished flow becomes is decided by the layer above through [`StreamApp`], the way Retina's
//! connection tracker hands streams to parsers it does not know. Keeping the table
//! protocol-free lets the live sensor and the offline reader share it, and lets a new protocol
//! plug in without touching TCP.

use super::FlowSummary;
use super::lineage::Lineage;
use super::reassembly::{Reassembler, ReassemblyLimits, StreamEvent};
use crate::decode::{PacketMeta, TcpFlags, Transport};
use crate::record::{EndReason, Side};
use ahash::AHashMap;
use std::mem::size_of;
use std::net::IpAddr;

/// An address and port.
pub type Endpoint = (IpAddr, u16);

/// Bounds of one worker's flow table.
#[derive(Clone, Copy, Debug)]
pub struct TableConfig {
    /// Flows tracked at most.
    pub max_flows: usize,
    /// Idle time after which a flow is closed.
    pub idle_timeout_us: i64,
    /// Per-direction reassembly bounds.
    pub reassembly: ReassemblyLimits,
    /// Bytes of all flows at most (the memory budget's share): beyond it the oldest are evicted.
    pub max_bytes: usize,
}

/// Counters of the TCP layer of one flow table.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableStats {
    /// TCP packets handled.
    pub tcp_packets: u64,
    /// Flows removed because the table was full.
    pub evicted_flows: u64,
    /// Followed flows the app let go of ([`StreamApp::done`]): their later packets were only
    /// looked up.
    pub released_flows: u64,
}

/// What the app wants from one direction of a followed flow, asked before each segment.
#[derive(Clone, Copy, Debug)]
pub struct DirectionNeeds {
    /// Deliver this direction's bytes (false once the parser has seen all it needs).
    pub bytes: bool,
    /// Remember delivered bytes, so that a retransmission that disagrees is reported.
    pub keep_recent: bool,
    /// Treat the peer's acknowledgments of bytes never seen as holes in this direction.
    pub acked_holes: bool,
}

/// How a new flow is to be handled, decided by the app on its first packet.
pub enum Open<F, P> {
    /// Follow it: reassemble both directions and hand the bytes to the app.
    Follow {
        /// The side that opened the connection (or, mid-stream, is taken to have).
        client: Endpoint,
        /// The other side.
        server: Endpoint,
        /// The app's state for this flow.
        flow: F,
    },
    /// Watch it with the app's probe until the app knows whether to follow it.
    Probe(P),
    /// Do not track it.
    Ignore,
}

/// What a probe concluded after one more packet.
pub enum ProbeStep<F> {
    /// Not decided yet.
    Continue,
    /// Not a flow to follow: remember it so it is not probed again.
    GiveUp,
    /// Follow it from now on.
    Follow(Confirmed<F>),
}

/// A probed flow the app decided to follow.
pub struct Confirmed<F> {
    /// The client.
    pub client: Endpoint,
    /// The server.
    pub server: Endpoint,
    /// When the probe saw the flow's first packet.
    pub first_us: i64,
    /// The probe did not see the connection open.
    pub mid_stream: bool,
    /// Server bytes the probe held (their sequence number and the bytes), replayed into the
    /// server direction before the current packet.
    pub replay: Option<(u32, Vec<u8>)>,
    /// The app's state for this flow.
    pub flow: F,
}

/// The layer above the flow table: it decides which flows to follow and receives their bytes in
/// stream order. All methods get the app's per-flow state; the table never looks inside it.
pub trait StreamApp {
    /// Per-flow state of a followed flow.
    type Flow;
    /// Per-flow state of a probed flow.
    type Probe;

    /// A flow's first packet (a SYN or a segment with payload).
    fn open(
        &mut self,
        src: Endpoint,
        dst: Endpoint,
        flags: TcpFlags,
        ts_us: i64,
    ) -> Open<Self::Flow, Self::Probe>;

    /// One more packet of a probed flow.
    fn probe(
        &mut self,
        probe: &mut Self::Probe,
        src: Endpoint,
        seq: u32,
        flags: TcpFlags,
        payload: &[u8],
        ts_us: i64,
    ) -> ProbeStep<Self::Flow>;

    /// What the app wants from `side` of `flow` now.
    fn needs(&self, flow: &Self::Flow, side: Side) -> DirectionNeeds;

    /// Reassembled bytes, holes and conflicts of one direction, in stream order.
    fn on_stream(&mut self, flow: &mut Self::Flow, side: Side, event: StreamEvent<'_>, ts_us: i64);

    /// Called after each segment's bytes were delivered, with the packet that carried them.
    fn segment_done(&mut self, _flow: &mut Self::Flow, _side: Side, _meta: &PacketMeta) {}

    /// Whether bytes still held behind a hole are delivered when the flow ends.
    fn wants_tail(&self, flow: &Self::Flow) -> bool;

    /// Whether the app is done with `flow` for good: it wants no more bytes of either side and
    /// no [`StreamApp::close`]. Asked after each packet of a followed flow that did not end it.
    /// When true, the table drops the app's state and both reassemblers, and the flow's later
    /// packets are absorbed by a closed flow's tombstone (one lookup each; it lingers 30 s after
    /// the last of them, or until a new SYN reuses the ports).
    fn done(&self, _flow: &Self::Flow) -> bool {
        false
    }

    /// The flow ended: both sides closed, a reset, the idle timeout, eviction or the end of the
    /// input. `end` says which.
    fn close(&mut self, flow: Self::Flow, summary: &FlowSummary, end: EndReason);

    /// The table looked for idle flows at capture time `now_us` (every few seconds).
    fn swept(&mut self, _now_us: i64) {}
}

/// Both endpoints in a canonical order, so both directions find the same flow.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    lo: Endpoint,
    hi: Endpoint,
}

impl FlowKey {
    fn new(a: Endpoint, b: Endpoint) -> FlowKey {
        if a <= b {
            FlowKey { lo: a, hi: b }
        } else {
            FlowKey { lo: b, hi: a }
        }
    }
}

/// A followed flow: two reassemblers, the TCP facts, and the app's state.
struct Connection<F> {
    client: Endpoint,
    server: Endpoint,
    first_us: i64,
    last_us: i64,
    mid_stream: bool,
    packets: [u64; 2],
    bytes: [u64; 2],
    fin: [bool; 2],
    rst: bool,
    dirs: [Reassembler; 2],
    lineage: [Lineage; 2],
    app: F,
}

impl<F> Connection<F> {
    fn new(
        limits: ReassemblyLimits,
        client: Endpoint,
        server: Endpoint,
        ts: i64,
        mid_stream: bool,
        app: F,
    ) -> Connection<F> {
        Connection {
            client,
            server,
            first_us: ts,
            last_us: ts,
            mid_stream,
            packets: [0; 2],
            bytes: [0; 2],
            fin: [false; 2],
            rst: false,
            dirs: [Reassembler::new(limits), Reassembler::new(limits)],
            lineage: [Lineage::default(); 2],
            app,
        }
    }

    fn side_of(&self, src: Endpoint) -> Side {
        if src == self.client {
            Side::Client
        } else {
            Side::Server
        }
    }

    fn packet<A: StreamApp<Flow = F>>(
        &mut self,
        app: &mut A,
        meta: &PacketMeta,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &[u8],
    ) {
        let side = self.side_of((meta.src, meta.sport));
        let (me, peer_side) = match side {
            Side::Client => (0, Side::Server),
            Side::Server => (1, Side::Client),
        };
        self.last_us = self.last_us.max(meta.ts_us);
        self.packets[me] += 1;
        self.bytes[me] += payload.len() as u64;
        let reset = flags.has(TcpFlags::RST);
        self.lineage[me].observe(meta.ts_us, meta.ip_ttl, meta.ip_id, payload.len(), reset);
        if reset {
            self.rst = true;
            return;
        }
        let ts = meta.ts_us;
        let flow = &mut self.app;
        let [d0, d1] = &mut self.dirs;
        let (mine, theirs) = if me == 0 { (d0, d1) } else { (d1, d0) };
        let syn = flags.has(TcpFlags::SYN);
        let fin = flags.has(TcpFlags::FIN);
        let needs = app.needs(flow, side);
        if needs.bytes || syn || !mine.started() {
            mine.set_keep_recent(needs.keep_recent);
            mine.segment(seq, syn, fin, payload, &mut |ev: StreamEvent<'_>| {
                app.on_stream(flow, side, ev, ts)
            });
            if meta.payload_missing > 0 {
                mine.snapped(
                    seq,
                    syn,
                    payload.len(),
                    meta.payload_missing,
                    &mut |ev: StreamEvent<'_>| app.on_stream(flow, side, ev, ts),
                );
            }
            app.segment_done(flow, side, meta);
        }
        if flags.has(TcpFlags::ACK) && app.needs(flow, peer_side).acked_holes {
            theirs.peer_ack(ack, &mut |ev: StreamEvent<'_>| {
                app.on_stream(flow, peer_side, ev, ts)
            });
        }
        if fin {
            self.fin[me] = true;
        }
    }

    fn closed(&self) -> bool {
        self.rst || (self.fin[0] && self.fin[1])
    }

    /// Heap bytes of both reassemblers.
    fn buffered(&self) -> usize {
        self.dirs[0].heap_bytes() + self.dirs[1].heap_bytes()
    }

    /// Ends the flow: delivers what the reassemblers still hold (if the app wants it), works
    /// out how it ended, and hands it to the app.
    fn finish<A: StreamApp<Flow = F>>(mut self, app: &mut A, end: EndReason) {
        let ts = self.last_us;
        let flow = &mut self.app;
        if app.wants_tail(flow) {
            let [d0, d1] = &mut self.dirs;
            d0.flush(&mut |ev| app.on_stream(flow, Side::Client, ev, ts));
            d1.flush(&mut |ev| app.on_stream(flow, Side::Server, ev, ts));
        }
        let end = if self.rst {
            EndReason::Reset
        } else if self.fin[0] && self.fin[1] {
            EndReason::Fin
        } else {
            end
        };
        let (s0, s1) = (self.dirs[0].stats, self.dirs[1].stats);
        let summary = FlowSummary {
            client: self.client,
            server: self.server,
            first_us: self.first_us,
            last_us: self.last_us,
            mid_stream: self.mid_stream,
            packets: self.packets,
            bytes: self.bytes,
            gaps: s0.gaps + s1.gaps,
            gap_bytes: s0.gap_bytes + s1.gap_bytes,
            retransmissions: s0.retransmissions + s1.retransmissions,
            acks: s0.acks + s1.acks,
            acked_gaps: s0.acked_gaps + s1.acked_gaps,
            lineage: self.lineage,
        };
        app.close(self.app, &summary, end);
    }
}

/// A flow being probed.
struct Probing<P> {
    last_us: i64,
    probe: P,
}

enum Entry<F, P> {
    Followed(Box<Connection<F>>),
    Probing(Box<Probing<P>>),
    /// A flow the app does not want: remembered so it is not probed again.
    Ignored {
        last_us: i64,
    },
    /// A finished flow; trailing packets (last ACKs, retransmitted FINs) are absorbed.
    Closed {
        last_us: i64,
    },
}

/// A hash table slot's overhead beyond the key and the entry, roughly.
const SLOT_OVERHEAD: usize = 16;
/// What a followed flow's parser holds on the heap besides the reassembly buffers (greeting,
/// capabilities, TLS facts, the server's certificate chain), estimated: the parser bounds each of
/// these, and weighing them per packet would cost more than the estimate is off.
const APP_HEAP_ESTIMATE: usize = 4096;
/// What a probe holds at most (the candidate greeting).
const PROBE_HEAP_ESTIMATE: usize = 4096;

impl<F, P> Entry<F, P> {
    /// Bytes this entry costs, its slot included.
    fn bytes(&self) -> usize {
        let slot = size_of::<FlowKey>() + size_of::<Self>() + SLOT_OVERHEAD;
        match self {
            Entry::Followed(c) => {
                slot + size_of::<Connection<F>>() + APP_HEAP_ESTIMATE + c.buffered()
            }
            Entry::Probing(_) => slot + size_of::<Probing<P>>() + PROBE_HEAP_ESTIMATE,
            Entry::Ignored { .. } | Entry::Closed { .. } => slot,
        }
    }

    fn last_us(&self) -> i64 {
        match self {
            Entry::Followed(c) => c.last_us,
            Entry::Probing(p) => p.last_us,
            Entry::Ignored { last_us } | Entry::Closed { last_us } => *last_us,
        }
    }
}

/// How long a closed flow's tombstone lingers.
const CLOSED_LINGER_US: i64 = 30_000_000;
/// How often (capture time) idle flows are looked for.
const SWEEP_EVERY_US: i64 = 5_000_000;

/// One worker's TCP flows.
pub struct FlowTable<A: StreamApp> {
    cfg: TableConfig,
    flows: AHashMap<FlowKey, Entry<A::Flow, A::Probe>>,
    now_us: i64,
    next_sweep_us: i64,
    /// Bytes of all entries (kept as entries come, go and buffer bytes).
    bytes: usize,
    /// Counters.
    pub stats: TableStats,
}

impl<A: StreamApp> FlowTable<A> {
    /// An empty table.
    pub fn new(cfg: TableConfig) -> FlowTable<A> {
        FlowTable {
            cfg,
            flows: AHashMap::new(),
            now_us: i64::MIN,
            next_sweep_us: i64::MIN,
            bytes: 0,
            stats: TableStats::default(),
        }
    }

    /// Bytes of all tracked flows, reassembly buffers included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds an entry, keeping the byte count.
    fn put(
        &mut self,
        key: FlowKey,
        entry: Entry<A::Flow, A::Probe>,
    ) -> Option<Entry<A::Flow, A::Probe>> {
        self.bytes += entry.bytes();
        let old = self.flows.insert(key, entry);
        if let Some(o) = &old {
            self.bytes -= o.bytes();
        }
        old
    }

    /// Removes an entry, keeping the byte count.
    fn take(&mut self, key: &FlowKey) -> Option<Entry<A::Flow, A::Probe>> {
        let old = self.flows.remove(key);
        if let Some(o) = &old {
            self.bytes -= o.bytes();
        }
        old
    }

    /// Flows currently tracked.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Capture time as this table has seen it.
    pub fn now_us(&self) -> i64 {
        self.now_us
    }

    /// Handles one TCP packet (the caller has moved time forward with [`FlowTable::advance`]).
    /// Packets of other transports are ignored.
    pub fn packet(&mut self, app: &mut A, meta: &PacketMeta, payload: &[u8]) {
        let Transport::Tcp { seq, ack, flags } = meta.transport else {
            return;
        };
        self.stats.tcp_packets += 1;
        let src = (meta.src, meta.sport);
        let dst = (meta.dst, meta.dport);
        let key = FlowKey::new(src, dst);
        let syn_only = flags.has(TcpFlags::SYN) && !flags.has(TcpFlags::ACK);
        let ts = meta.ts_us;
        match self.flows.get_mut(&key) {
            Some(Entry::Followed(conn)) => {
                let before = conn.buffered();
                conn.packet(app, meta, seq, ack, flags, payload);
                self.bytes = (self.bytes + conn.buffered()) - before;
                if conn.closed() {
                    self.close(app, key, EndReason::Fin);
                } else if app.done(&conn.app) {
                    self.release(key, ts);
                }
                return;
            }
            Some(Entry::Probing(p)) => {
                p.last_us = ts;
                match app.probe(&mut p.probe, src, seq, flags, payload, ts) {
                    ProbeStep::Continue => {}
                    ProbeStep::GiveUp => {
                        self.put(key, Entry::Ignored { last_us: ts });
                    }
                    ProbeStep::Follow(confirmed) => {
                        let mut conn = self.connection_from_probe(app, confirmed, ts);
                        conn.packet(app, meta, seq, ack, flags, payload);
                        self.put(key, Entry::Followed(Box::new(conn)));
                    }
                }
                return;
            }
            Some(Entry::Ignored { last_us }) | Some(Entry::Closed { last_us }) => {
                *last_us = ts;
                if !syn_only {
                    return;
                }
                // A new connection on the same ports.
                self.take(&key);
            }
            None => {}
        }
        if !flags.has(TcpFlags::SYN) && payload.is_empty() {
            return;
        }
        if self.flows.len() >= self.cfg.max_flows || self.bytes > self.cfg.max_bytes {
            self.evict_oldest(app);
        }
        match app.open(src, dst, flags, ts) {
            Open::Follow {
                client,
                server,
                flow,
            } => {
                let mid = !flags.has(TcpFlags::SYN);
                let mut conn = Connection::new(self.cfg.reassembly, client, server, ts, mid, flow);
                conn.packet(app, meta, seq, ack, flags, payload);
                if app.done(&conn.app) {
                    self.release(key, ts);
                } else {
                    self.put(key, Entry::Followed(Box::new(conn)));
                }
            }
            Open::Probe(mut probe) => {
                let entry = match app.probe(&mut probe, src, seq, flags, payload, ts) {
                    ProbeStep::GiveUp => Entry::Ignored { last_us: ts },
                    _ => Entry::Probing(Box::new(Probing { last_us: ts, probe })),
                };
                self.put(key, entry);
            }
            Open::Ignore => {}
        }
    }

    /// A connection for a flow the probe confirmed, with the bytes the probe held replayed.
    fn connection_from_probe(
        &self,
        app: &mut A,
        confirmed: Confirmed<A::Flow>,
        ts: i64,
    ) -> Connection<A::Flow> {
        let Confirmed {
            client,
            server,
            first_us,
            mid_stream,
            replay,
            flow,
        } = confirmed;
        let mut conn = Connection::new(
            self.cfg.reassembly,
            client,
            server,
            first_us,
            mid_stream,
            flow,
        );
        if let Some((seq, bytes)) = replay {
            let flow = &mut conn.app;
            conn.dirs[1].segment(seq, false, false, &bytes, &mut |ev| {
                app.on_stream(flow, Side::Server, ev, ts)
            });
            conn.packets[1] += 1;
            conn.bytes[1] += bytes.len() as u64;
        }
        conn
    }

    /// Stops following a flow the app is done with: its state and buffers go, a closed flow's
    /// tombstone absorbs its later packets (a packet after 30 s of silence starts a mid-stream
    /// flow, which the app may let go of again).
    fn release(&mut self, key: FlowKey, ts: i64) {
        self.stats.released_flows += 1;
        self.put(key, Entry::Closed { last_us: ts });
    }

    fn close(&mut self, app: &mut A, key: FlowKey, end: EndReason) {
        let last = self.flows.get(&key).map_or(self.now_us, Entry::last_us);
        if let Some(Entry::Followed(conn)) = self.put(key, Entry::Closed { last_us: last }) {
            conn.finish(app, end);
        }
    }

    /// Moves capture time forward; every few seconds of capture time, closes idle flows and
    /// tells the app it swept.
    pub fn advance(&mut self, app: &mut A, ts_us: i64) {
        if ts_us <= self.now_us {
            return;
        }
        self.now_us = ts_us;
        if self.next_sweep_us == i64::MIN {
            self.next_sweep_us = ts_us + SWEEP_EVERY_US;
            return;
        }
        if ts_us < self.next_sweep_us {
            return;
        }
        self.next_sweep_us = ts_us + SWEEP_EVERY_US;
        let idle = self.cfg.idle_timeout_us;
        let now = self.now_us;
        let mut expired: Vec<FlowKey> = Vec::new();
        let mut freed = 0;
        self.flows.retain(|key, entry| {
            let age = now.saturating_sub(entry.last_us());
            let keep = match entry {
                Entry::Followed(_) if age > idle => {
                    expired.push(*key);
                    true
                }
                Entry::Followed(_) => true,
                Entry::Closed { .. } => age <= CLOSED_LINGER_US,
                Entry::Probing(_) | Entry::Ignored { .. } => age <= idle,
            };
            if !keep {
                freed += entry.bytes();
            }
            keep
        });
        self.bytes -= freed;
        for key in expired {
            if let Some(Entry::Followed(conn)) = self.take(&key) {
                conn.finish(app, EndReason::Timeout);
            }
        }
        // Buffers grow on flows already tracked, too: over the budget, the oldest go now.
        while self.bytes > self.cfg.max_bytes && !self.flows.is_empty() {
            self.evict_oldest(app);
        }
        app.swept(now);
    }

    /// Frees room by evicting the oldest sixteenth of the table.
    fn evict_oldest(&mut self, app: &mut A) {
        let mut ages: Vec<(i64, FlowKey)> =
            self.flows.iter().map(|(k, e)| (e.last_us(), *k)).collect();
        let n = (ages.len() / 16).max(1);
        if n < ages.len() {
            ages.select_nth_unstable_by_key(n, |a| a.0);
        }
        for (_, key) in ages.into_iter().take(n) {
            if let Some(entry) = self.take(&key) {
                self.stats.evicted_flows += 1;
                if let Entry::Followed(conn) = entry {
                    conn.finish(app, EndReason::Evicted);
                }
            }
        }
    }

    /// Ends every flow (end of input), oldest first.
    pub fn finish_all(&mut self, app: &mut A) {
        let flows = std::mem::take(&mut self.flows);
        self.bytes = 0;
        let mut followed: Vec<Box<Connection<A::Flow>>> = flows
            .into_values()
            .filter_map(|e| match e {
                Entry::Followed(c) => Some(c),
                _ => None,
            })
            .collect();
        followed.sort_by_key(|c| c.first_us);
        for conn in followed {
            conn.finish(app, EndReason::CaptureEnd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Transport;

    /// Follows every flow, wants its bytes, and is done with it after `done_after` bytes of
    /// the client.
    #[derive(Default)]
    struct Counting {
        done_after: usize,
        delivered: usize,
        closed: usize,
    }

    impl StreamApp for Counting {
        type Flow = usize;
        type Probe = ();

        fn open(&mut self, src: Endpoint, dst: Endpoint, _: TcpFlags, _: i64) -> Open<usize, ()> {
            Open::Follow {
                client: src,
                server: dst,
                flow: 0,
            }
        }

        fn probe(
            &mut self,
            _: &mut (),
            _: Endpoint,
            _: u32,
            _: TcpFlags,
            _: &[u8],
            _: i64,
        ) -> ProbeStep<usize> {
            ProbeStep::GiveUp
        }

        fn needs(&self, _: &usize, _: Side) -> DirectionNeeds {
            DirectionNeeds {
                bytes: true,
                keep_recent: false,
                acked_holes: false,
            }
        }

        fn on_stream(&mut self, flow: &mut usize, _: Side, event: StreamEvent<'_>, _: i64) {
            if let StreamEvent::Data { bytes, .. } = event {
                *flow += bytes.len();
                self.delivered += bytes.len();
            }
        }

        fn wants_tail(&self, _: &usize) -> bool {
            false
        }

        fn close(&mut self, _: usize, _: &FlowSummary, _: EndReason) {
            self.closed += 1;
        }

        fn done(&self, flow: &usize) -> bool {
            *flow >= self.done_after
        }
    }

    fn packet(from: u16, seq: u32, flags: u8, ts_us: i64) -> PacketMeta {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let (src, dst, sport, dport) = if from == 1 {
            (a, b, 40000, 443)
        } else {
            (b, a, 443, 40000)
        };
        PacketMeta {
            ts_us,
            src,
            dst,
            sport,
            dport,
            ip_ttl: 64,
            ip_id: 0,
            transport: Transport::Tcp {
                seq,
                ack: 0,
                flags: TcpFlags(flags),
            },
            payload_truncated: false,
            payload_missing: 0,
        }
    }

    #[test]
    fn a_flow_the_app_is_done_with_is_dropped_and_its_packets_only_looked_up() {
        let cfg = TableConfig {
            max_flows: 100,
            idle_timeout_us: 300_000_000,
            reassembly: ReassemblyLimits::default(),
            max_bytes: usize::MAX,
        };
        let mut table: FlowTable<Counting> = FlowTable::new(cfg);
        let mut app = Counting {
            done_after: 10,
            ..Counting::default()
        };
        let (syn, ack) = (TcpFlags::SYN, TcpFlags::ACK);
        table.advance(&mut app, 1);
        table.packet(&mut app, &packet(1, 100, syn, 1), &[]);
        table.packet(&mut app, &packet(2, 500, syn | ack, 2), &[]);
        let followed = table.bytes();
        table.packet(&mut app, &packet(1, 101, ack, 3), &[7; 4]);
        assert_eq!((table.stats.released_flows, app.delivered), (0, 4));
        table.packet(&mut app, &packet(1, 105, ack, 4), &[7; 6]);
        // Done after 10 bytes: the state and buffers went, a tombstone is left.
        assert_eq!((table.stats.released_flows, app.delivered), (1, 10));
        assert_eq!(table.len(), 1);
        eprintln!(
            "followed: {followed} bytes, released: {} bytes",
            table.bytes()
        );
        assert!(
            table.bytes() < followed / 10,
            "{} of {followed}",
            table.bytes()
        );
        // Later packets reach nobody, and the flow is never closed.
        for i in 0..50 {
            table.packet(&mut app, &packet(2, 501 + i * 100, ack, 5), &[9; 100]);
        }
        table.packet(&mut app, &packet(1, 111, TcpFlags::FIN | ack, 6), &[]);
        assert_eq!(app.delivered, 10);
        assert_eq!(table.stats.tcp_packets, 55);
        table.finish_all(&mut app);
        assert_eq!(app.closed, 0);
        // A new connection on the same ports is followed again.
        let mut table: FlowTable<Counting> = FlowTable::new(cfg);
        table.packet(&mut app, &packet(1, 100, syn, 1), &[]);
        table.packet(&mut app, &packet(1, 101, ack, 2), &[1; 10]);
        table.packet(&mut app, &packet(1, 7000, syn, 3), &[]);
        table.packet(&mut app, &packet(1, 7001, ack, 4), &[1; 3]);
        assert_eq!(table.stats.released_flows, 1);
        table.finish_all(&mut app);
        assert_eq!(app.closed, 1);
    }
}
