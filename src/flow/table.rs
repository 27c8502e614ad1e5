//! The flow table of one worker: finds the flow of each TCP packet, creates SMTP flows for mail
//! ports and content-probes the rest, expires idle flows by capture time, evicts the oldest when
//! full, and turns every finished SMTP flow into a session record.

use super::FlowSummary;
use super::reassembly::{Reassembler, ReassemblyLimits, StreamEvent};
use crate::decode::{PacketMeta, TcpFlags, Transport};
use crate::detect::rules;
use crate::dns::{DnsConfig, DnsPacket, DnsRecord, DnsTracker};
use crate::event::SessionRecord;
use crate::smtp::{EndReason, Side, SmtpConfig, SmtpSession};
use crate::util::CaptureClock;

/// What a worker produces: finished SMTP sessions and DNS transactions, each stamped with the
/// worker's capture time when it was produced, so the output stage can merge the workers'
/// streams in capture order (and judge cross-client evidence the same way on every run).
#[derive(Default)]
pub struct Outputs {
    /// Session records, not yet judged across sessions.
    pub sessions: Vec<SessionRecord>,
    /// DNS transactions of interest, with their findings.
    pub dns: Vec<DnsRecord>,
    /// Capture time at which each of `sessions` was produced.
    pub session_at: Vec<i64>,
    /// Capture time at which each of `dns` was produced.
    pub dns_at: Vec<i64>,
    /// The worker has seen all packets up to this capture time: nothing it sends later is
    /// stamped earlier.
    pub watermark_us: i64,
}

impl Outputs {
    /// True when there is nothing to hand on.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.dns.is_empty()
    }

    /// Stamps every unstamped record with `now_us`.
    pub fn stamp(&mut self, now_us: i64) {
        self.session_at.resize(self.sessions.len(), now_us);
        self.dns_at.resize(self.dns.len(), now_us);
    }
}
use super::lineage::Lineage;
use ahash::AHashMap;
use std::net::IpAddr;

/// A set of TCP ports, as a bitmap: membership is one load on the hot path.
#[derive(Clone)]
pub struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    /// A set holding `ports`.
    pub fn new(ports: &[u16]) -> PortSet {
        let mut bits = Box::new([0u64; 1024]);
        for &p in ports {
            bits[usize::from(p) / 64] |= 1 << (p % 64);
        }
        PortSet(bits)
    }

    /// True when `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }
}

/// Configuration of every worker's flow table.
#[derive(Clone)]
pub struct FlowConfig {
    /// Ports where SMTP is expected (25, 587, 465).
    pub smtp_ports: PortSet,
    /// Ports where TLS starts at once (465).
    pub implicit_tls_ports: PortSet,
    /// Recognise SMTP on other ports by content (a 220 answered by EHLO/HELO).
    pub probe_other_ports: bool,
    /// Flows tracked by this worker at most.
    pub max_flows: usize,
    /// Idle time after which a flow is closed.
    pub idle_timeout_us: i64,
    /// Per-direction reassembly bounds.
    pub reassembly: ReassemblyLimits,
    /// Per-session SMTP bounds.
    pub smtp: SmtpConfig,
    /// The sensor name written into every record.
    pub sensor: String,
    /// DNS tracking.
    pub dns: DnsConfig,
}

/// Counters of one flow table.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FlowStats {
    /// TCP packets handled.
    pub tcp_packets: u64,
    /// UDP packets handled (DNS comes later; counted for now).
    pub udp_packets: u64,
    /// Flows created on mail ports.
    pub smtp_flows: u64,
    /// Flows on other ports that were content-probed.
    pub probed_flows: u64,
    /// Probed flows recognised as SMTP.
    pub recognised_by_content: u64,
    /// Flows on mail ports that never spoke SMTP or TLS.
    pub not_smtp_flows: u64,
    /// Flows removed because the table was full.
    pub evicted_flows: u64,
    /// SMTP sessions cut by eviction (they are still reported).
    pub evicted_sessions: u64,
    /// Flows closed by the idle timeout.
    pub timed_out_flows: u64,
    /// Session records produced.
    pub sessions: u64,
    /// Holes in SMTP streams.
    pub gaps: u64,
    /// Bytes lost in holes.
    pub gap_bytes: u64,
    /// Overlapping segments with different bytes.
    pub overlap_conflicts: u64,
    /// Retransmitted segments.
    pub retransmissions: u64,
    /// Lines longer than the limit.
    pub overlong_lines: u64,
    /// Lines that were neither command nor reply.
    pub malformed_lines: u64,
    /// Packets whose timestamp jumped far ahead alone and was not believed.
    pub time_jumps_held: u64,
}

impl FlowStats {
    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &FlowStats) {
        self.tcp_packets += o.tcp_packets;
        self.udp_packets += o.udp_packets;
        self.smtp_flows += o.smtp_flows;
        self.probed_flows += o.probed_flows;
        self.recognised_by_content += o.recognised_by_content;
        self.not_smtp_flows += o.not_smtp_flows;
        self.evicted_flows += o.evicted_flows;
        self.evicted_sessions += o.evicted_sessions;
        self.timed_out_flows += o.timed_out_flows;
        self.sessions += o.sessions;
        self.gaps += o.gaps;
        self.gap_bytes += o.gap_bytes;
        self.overlap_conflicts += o.overlap_conflicts;
        self.retransmissions += o.retransmissions;
        self.overlong_lines += o.overlong_lines;
        self.malformed_lines += o.malformed_lines;
        self.time_jumps_held += o.time_jumps_held;
    }
}

/// Both endpoints in a canonical order, so both directions find the same flow.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
}

impl FlowKey {
    fn new(a: (IpAddr, u16), b: (IpAddr, u16)) -> FlowKey {
        if a <= b {
            FlowKey { lo: a, hi: b }
        } else {
            FlowKey { lo: b, hi: a }
        }
    }
}

/// An SMTP flow: two reassemblers and the session they feed.
struct SmtpFlow {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    first_us: i64,
    last_us: i64,
    mid_stream: bool,
    packets: [u64; 2],
    bytes: [u64; 2],
    fin: [bool; 2],
    rst: bool,
    dirs: [Reassembler; 2],
    lineage: [Lineage; 2],
    session: SmtpSession,
}

impl SmtpFlow {
    fn new(
        cfg: &FlowConfig,
        client: (IpAddr, u16),
        server: (IpAddr, u16),
        ts: i64,
        mid: bool,
    ) -> SmtpFlow {
        let implicit = cfg.implicit_tls_ports.contains(server.1);
        SmtpFlow {
            client,
            server,
            first_us: ts,
            last_us: ts,
            mid_stream: mid,
            packets: [0; 2],
            bytes: [0; 2],
            fin: [false; 2],
            rst: false,
            dirs: [
                Reassembler::new(cfg.reassembly),
                Reassembler::new(cfg.reassembly),
            ],
            lineage: [Lineage::default(); 2],
            session: SmtpSession::new(cfg.smtp, implicit),
        }
    }

    fn side_of(&self, src: (IpAddr, u16)) -> Side {
        if src == self.client {
            Side::Client
        } else {
            Side::Server
        }
    }

    fn packet(&mut self, meta: &PacketMeta, seq: u32, ack: u32, flags: TcpFlags, payload: &[u8]) {
        let side = self.side_of((meta.src, meta.sport));
        let (me, peer, peer_side) = match side {
            Side::Client => (0, 1, Side::Server),
            Side::Server => (1, 0, Side::Client),
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
        let session = &mut self.session;
        let [d0, d1] = &mut self.dirs;
        let (mine, theirs) = if me == 0 { (d0, d1) } else { (d1, d0) };
        let syn = flags.has(TcpFlags::SYN);
        let fin = flags.has(TcpFlags::FIN);
        if session.wants_bytes(side) || syn || !mine.started() {
            mine.set_keep_recent(session.dialog_phase(side));
            mine.segment(seq, syn, fin, payload, &mut |ev: StreamEvent<'_>| {
                session.on_stream(side, ev, ts)
            });
        }
        if flags.has(TcpFlags::ACK) && session.wants_bytes(peer_side) {
            theirs.peer_ack(ack, &mut |ev: StreamEvent<'_>| {
                session.on_stream(peer_side, ev, ts)
            });
        }
        if fin {
            self.fin[me] = true;
        }
        let _ = peer;
    }

    fn closed(&self) -> bool {
        self.rst || (self.fin[0] && self.fin[1])
    }

    /// Ends the flow and builds its record; `None` when it never spoke SMTP.
    fn finish(
        mut self,
        end: EndReason,
        cfg: &FlowConfig,
        stats: &mut FlowStats,
    ) -> Option<SessionRecord> {
        let ts = self.last_us;
        let session = &mut self.session;
        let [d0, d1] = &mut self.dirs;
        d0.flush(&mut |ev| session.on_stream(Side::Client, ev, ts));
        d1.flush(&mut |ev| session.on_stream(Side::Server, ev, ts));
        let end = if self.rst {
            EndReason::Reset
        } else if self.fin[0] && self.fin[1] {
            EndReason::Fin
        } else {
            end
        };
        session.finish(end);
        let facts = std::mem::take(&mut session.facts);
        let (s0, s1) = (d0.stats, d1.stats);
        stats.gaps += u64::from(s0.gaps + s1.gaps);
        stats.gap_bytes += s0.gap_bytes + s1.gap_bytes;
        stats.retransmissions += u64::from(s0.retransmissions + s1.retransmissions);
        stats.overlap_conflicts +=
            (facts.conflicts.len() as u64) + u64::from(facts.conflicts_dropped);
        stats.overlong_lines += u64::from(facts.overlong_lines);
        stats.malformed_lines += u64::from(facts.malformed_lines);
        if !facts.recognised {
            stats.not_smtp_flows += 1;
            return None;
        }
        stats.sessions += 1;
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
            lineage: self.lineage,
        };
        Some(rules::build_record(&summary, facts, end, &cfg.sensor))
    }
}

/// The DNS port.
const DNS_PORT: u16 = 53;
/// The largest DNS message over TCP (a two-byte length prefix).
const MAX_DNS_TCP_MESSAGE: usize = 65_535;

/// DNS over TCP: two reassembled directions split into length-prefixed messages.
struct DnsTcpFlow {
    client: (IpAddr, u16),
    last_us: i64,
    dirs: [Reassembler; 2],
    bufs: [Vec<u8>; 2],
    fin: [bool; 2],
    rst: bool,
}

impl DnsTcpFlow {
    fn new(cfg: &FlowConfig, client: (IpAddr, u16), _server: (IpAddr, u16), ts: i64) -> DnsTcpFlow {
        let mut dirs = [
            Reassembler::new(cfg.reassembly),
            Reassembler::new(cfg.reassembly),
        ];
        for d in &mut dirs {
            d.set_keep_recent(false);
        }
        DnsTcpFlow {
            client,
            last_us: ts,
            dirs,
            bufs: [Vec::new(), Vec::new()],
            fin: [false; 2],
            rst: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        meta: &PacketMeta,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &[u8],
        dns: &mut DnsTracker,
        out: &mut Vec<DnsRecord>,
    ) {
        let me = usize::from((meta.src, meta.sport) != self.client);
        self.last_us = self.last_us.max(meta.ts_us);
        if flags.has(TcpFlags::RST) {
            self.rst = true;
            return;
        }
        let [b0, b1] = &mut self.bufs;
        let buf = if me == 0 { b0 } else { b1 };
        let mut lost = false;
        self.dirs[me].segment(
            seq,
            flags.has(TcpFlags::SYN),
            flags.has(TcpFlags::FIN),
            payload,
            &mut |ev| match ev {
                StreamEvent::Data { bytes, .. } => {
                    if buf.len() + bytes.len() <= MAX_DNS_TCP_MESSAGE + 2 {
                        buf.extend_from_slice(bytes);
                    } else {
                        lost = true;
                    }
                }
                StreamEvent::Gap { .. } => lost = true,
                StreamEvent::Conflict(_) => {}
            },
        );
        let _ = ack;
        if lost {
            // A hole or an oversized message: the framing is lost for this direction.
            dns.stats.malformed += 1;
            buf.clear();
        }
        while buf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if buf.len() < len + 2 {
                break;
            }
            let pkt = DnsPacket {
                ts_us: meta.ts_us,
                src: (meta.src, meta.sport),
                dst: (meta.dst, meta.dport),
                ip_ttl: meta.ip_ttl,
                transport: "tcp",
            };
            dns.payload(pkt, &buf[2..len + 2], out);
            buf.drain(..len + 2);
        }
        if flags.has(TcpFlags::FIN) {
            self.fin[me] = true;
        }
    }

    fn closed(&self) -> bool {
        self.rst || (self.fin[0] && self.fin[1])
    }
}

/// A flow on a non-mail port, watched until it proves to be SMTP or not.
struct Probe {
    last_us: i64,
    first_us: i64,
    syn_from: Option<(IpAddr, u16)>,
    /// The candidate greeting: who sent it, its sequence number, its bytes.
    banner: Option<((IpAddr, u16), u32, Vec<u8>)>,
    packets: u16,
}

/// Payload packets a probe looks at before giving up.
const PROBE_PACKETS: u16 = 16;
/// Greeting bytes a probe keeps.
const PROBE_BANNER: usize = 4096;

enum Entry {
    Smtp(Box<SmtpFlow>),
    /// DNS over TCP (length-prefixed messages).
    DnsTcp(Box<DnsTcpFlow>),
    Probe(Box<Probe>),
    /// A flow that is not SMTP: remembered so it is not probed again.
    Ignored {
        last_us: i64,
    },
    /// A finished flow; trailing packets (last ACKs, retransmitted FINs) are absorbed.
    Closed {
        last_us: i64,
    },
}

impl Entry {
    fn last_us(&self) -> i64 {
        match self {
            Entry::Smtp(f) => f.last_us,
            Entry::DnsTcp(f) => f.last_us,
            Entry::Probe(p) => p.last_us,
            Entry::Ignored { last_us } | Entry::Closed { last_us } => *last_us,
        }
    }
}

/// How long a closed flow's tombstone lingers.
const CLOSED_LINGER_US: i64 = 30_000_000;
/// How often (capture time) idle flows are looked for.
const SWEEP_EVERY_US: i64 = 5_000_000;

/// One worker's flows.
pub struct FlowTable {
    cfg: FlowConfig,
    flows: AHashMap<FlowKey, Entry>,
    now_us: i64,
    next_sweep_us: i64,
    clock: CaptureClock,
    /// DNS transactions and the per-client answers that link sessions to lookups.
    pub dns: DnsTracker,
    /// Counters.
    pub stats: FlowStats,
}

impl FlowTable {
    /// An empty table.
    pub fn new(cfg: FlowConfig) -> FlowTable {
        FlowTable {
            dns: DnsTracker::new(cfg.dns, cfg.sensor.clone()),
            cfg,
            flows: AHashMap::new(),
            now_us: i64::MIN,
            next_sweep_us: i64::MIN,
            clock: CaptureClock::default(),
            stats: FlowStats::default(),
        }
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

    /// Handles one packet; finished sessions are appended to `out`.
    pub fn packet(&mut self, meta: &PacketMeta, payload: &[u8], out: &mut Outputs) {
        let ts = self.clock.observe(meta.ts_us);
        self.stats.time_jumps_held = self.clock.held;
        let owned;
        let meta = if ts == meta.ts_us {
            meta
        } else {
            owned = PacketMeta { ts_us: ts, ..*meta };
            &owned
        };
        self.advance(meta.ts_us, out);
        let Transport::Tcp { seq, ack, flags } = meta.transport else {
            self.stats.udp_packets += 1;
            if meta.sport == DNS_PORT || meta.dport == DNS_PORT {
                let pkt = DnsPacket {
                    ts_us: meta.ts_us,
                    src: (meta.src, meta.sport),
                    dst: (meta.dst, meta.dport),
                    ip_ttl: meta.ip_ttl,
                    transport: "udp",
                };
                self.dns.payload(pkt, payload, &mut out.dns);
            }
            return;
        };
        self.stats.tcp_packets += 1;
        let src = (meta.src, meta.sport);
        let dst = (meta.dst, meta.dport);
        let key = FlowKey::new(src, dst);
        let syn_only = flags.has(TcpFlags::SYN) && !flags.has(TcpFlags::ACK);
        let ts = meta.ts_us;
        match self.flows.get_mut(&key) {
            Some(Entry::Smtp(flow)) => {
                if syn_only && flow.dirs[0].started() && flow.closed() {
                    // Port reuse after close is handled by the Closed arm; a SYN here is a
                    // retransmission.
                }
                flow.packet(meta, seq, ack, flags, payload);
                if flow.closed() {
                    self.close(key, EndReason::Fin, out);
                }
                return;
            }
            Some(Entry::Probe(probe)) => {
                probe.last_us = ts;
                match probe_step(probe, src, seq, flags, payload) {
                    ProbeStep::Continue => return,
                    ProbeStep::GiveUp => {
                        self.flows.insert(key, Entry::Ignored { last_us: ts });
                        return;
                    }
                    ProbeStep::Confirmed => {
                        let Some(Entry::Probe(probe)) = self.flows.remove(&key) else {
                            return;
                        };
                        self.stats.recognised_by_content += 1;
                        let flow = self.flow_from_probe(*probe, src);
                        self.flows.insert(key, Entry::Smtp(Box::new(flow)));
                        if let Some(Entry::Smtp(flow)) = self.flows.get_mut(&key) {
                            flow.packet(meta, seq, ack, flags, payload);
                        }
                        return;
                    }
                }
            }
            Some(Entry::DnsTcp(flow)) => {
                flow.packet(meta, seq, ack, flags, payload, &mut self.dns, &mut out.dns);
                if flow.closed() {
                    let last = flow.last_us;
                    self.flows.insert(key, Entry::Closed { last_us: last });
                }
                return;
            }
            Some(Entry::Ignored { last_us }) => {
                *last_us = ts;
                if !syn_only {
                    return;
                }
                self.flows.remove(&key);
            }
            Some(Entry::Closed { last_us }) => {
                *last_us = ts;
                if !syn_only {
                    return;
                }
                self.flows.remove(&key);
            }
            None => {}
        }
        if !flags.has(TcpFlags::SYN) && payload.is_empty() {
            return;
        }
        if self.flows.len() >= self.cfg.max_flows {
            self.evict_oldest(out);
        }
        let (sp, dp) = (meta.sport, meta.dport);
        if sp == DNS_PORT || dp == DNS_PORT {
            let (client, server) = if dp == DNS_PORT {
                (src, dst)
            } else {
                (dst, src)
            };
            let mut flow = DnsTcpFlow::new(&self.cfg, client, server, ts);
            flow.packet(meta, seq, ack, flags, payload, &mut self.dns, &mut out.dns);
            self.flows.insert(key, Entry::DnsTcp(Box::new(flow)));
            return;
        }
        let mail_port = self.cfg.smtp_ports.contains(sp) || self.cfg.smtp_ports.contains(dp);
        if mail_port {
            let (client, server) = orient(src, dst, flags, &self.cfg.smtp_ports);
            let mut flow = SmtpFlow::new(&self.cfg, client, server, ts, !flags.has(TcpFlags::SYN));
            self.stats.smtp_flows += 1;
            flow.packet(meta, seq, ack, flags, payload);
            self.flows.insert(key, Entry::Smtp(Box::new(flow)));
        } else if self.cfg.probe_other_ports {
            self.stats.probed_flows += 1;
            let mut probe = Probe {
                last_us: ts,
                first_us: ts,
                syn_from: None,
                banner: None,
                packets: 0,
            };
            let step = probe_step(&mut probe, src, seq, flags, payload);
            let entry = match step {
                ProbeStep::GiveUp => Entry::Ignored { last_us: ts },
                _ => Entry::Probe(Box::new(probe)),
            };
            self.flows.insert(key, entry);
        }
    }

    fn flow_from_probe(&self, probe: Probe, client: (IpAddr, u16)) -> SmtpFlow {
        let Some((server, banner_seq, banner)) = probe.banner else {
            unreachable_flow();
            return SmtpFlow::new(&self.cfg, client, client, probe.first_us, true);
        };
        let mid = probe.syn_from.is_none();
        let mut flow = SmtpFlow::new(&self.cfg, client, server, probe.first_us, mid);
        let ts = probe.last_us;
        let session = &mut flow.session;
        flow.dirs[1].segment(banner_seq, false, false, &banner, &mut |ev| {
            session.on_stream(Side::Server, ev, ts)
        });
        flow.packets[1] += 1;
        flow.bytes[1] += banner.len() as u64;
        flow
    }

    fn close(&mut self, key: FlowKey, end: EndReason, out: &mut Outputs) {
        let last = self.flows.get(&key).map_or(self.now_us, Entry::last_us);
        if let Some(Entry::Smtp(flow)) = self.flows.insert(key, Entry::Closed { last_us: last })
            && let Some(rec) = flow.finish(end, &self.cfg, &mut self.stats)
        {
            self.emit(rec, out);
        }
    }

    /// Moves capture time forward; expires idle flows every few seconds of capture time.
    pub fn advance(&mut self, ts_us: i64, out: &mut Outputs) {
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
        self.flows.retain(|key, entry| {
            let age = now.saturating_sub(entry.last_us());
            match entry {
                Entry::Smtp(_) if age > idle => {
                    expired.push(*key);
                    true
                }
                Entry::Closed { .. } => age <= CLOSED_LINGER_US,
                Entry::Probe(_) | Entry::Ignored { .. } | Entry::DnsTcp(_) => age <= idle,
                Entry::Smtp(_) => true,
            }
        });
        for key in expired {
            if let Some(Entry::Smtp(flow)) = self.flows.remove(&key) {
                self.stats.timed_out_flows += 1;
                if let Some(rec) = flow.finish(EndReason::Timeout, &self.cfg, &mut self.stats) {
                    self.emit(rec, out);
                }
            }
        }
        self.dns.expire(now, false, &mut out.dns);
    }

    /// Frees room by evicting the oldest sixteenth of the table.
    fn evict_oldest(&mut self, out: &mut Outputs) {
        let mut ages: Vec<(i64, FlowKey)> =
            self.flows.iter().map(|(k, e)| (e.last_us(), *k)).collect();
        let n = (ages.len() / 16).max(1);
        if n < ages.len() {
            ages.select_nth_unstable_by_key(n, |a| a.0);
        }
        for (_, key) in ages.into_iter().take(n) {
            if let Some(entry) = self.flows.remove(&key) {
                self.stats.evicted_flows += 1;
                if let Entry::Smtp(flow) = entry {
                    self.stats.evicted_sessions += 1;
                    if let Some(rec) = flow.finish(EndReason::Evicted, &self.cfg, &mut self.stats) {
                        self.emit(rec, out);
                    }
                }
            }
        }
    }

    /// Hands a finished session on, after tying it to the DNS lookup that led to it.
    fn emit(&mut self, mut rec: SessionRecord, out: &mut Outputs) {
        self.dns.link(&mut rec);
        out.sessions.push(rec);
    }

    /// Ends every flow (end of input).
    pub fn finish_all(&mut self, out: &mut Outputs) {
        let flows = std::mem::take(&mut self.flows);
        let mut smtp: Vec<Box<SmtpFlow>> = flows
            .into_values()
            .filter_map(|e| match e {
                Entry::Smtp(f) => Some(f),
                _ => None,
            })
            .collect();
        smtp.sort_by_key(|f| f.first_us);
        for flow in smtp {
            if let Some(rec) = flow.finish(EndReason::CaptureEnd, &self.cfg, &mut self.stats) {
                self.emit(rec, out);
            }
        }
        self.dns.expire(self.now_us, true, &mut out.dns);
    }
}

fn unreachable_flow() {}

/// Who is the client of a new flow on a mail port.
fn orient(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    flags: TcpFlags,
    mail_ports: &PortSet,
) -> ((IpAddr, u16), (IpAddr, u16)) {
    if flags.has(TcpFlags::SYN) {
        return if flags.has(TcpFlags::ACK) {
            (dst, src)
        } else {
            (src, dst)
        };
    }
    match (mail_ports.contains(src.1), mail_ports.contains(dst.1)) {
        (true, false) => (dst, src),
        (false, true) => (src, dst),
        _ if src.1 < dst.1 => (dst, src),
        _ => (src, dst),
    }
}

enum ProbeStep {
    Continue,
    Confirmed,
    GiveUp,
}

fn probe_step(
    probe: &mut Probe,
    src: (IpAddr, u16),
    seq: u32,
    flags: TcpFlags,
    payload: &[u8],
) -> ProbeStep {
    if flags.has(TcpFlags::SYN) && !flags.has(TcpFlags::ACK) {
        probe.syn_from = Some(src);
    }
    if flags.has(TcpFlags::RST) || payload.is_empty() {
        return ProbeStep::Continue;
    }
    probe.packets += 1;
    if probe.packets > PROBE_PACKETS {
        return ProbeStep::GiveUp;
    }
    match &probe.banner {
        None => {
            if is_greeting(payload) {
                let keep = payload.len().min(PROBE_BANNER);
                probe.banner = Some((src, seq, payload[..keep].to_vec()));
            }
            ProbeStep::Continue
        }
        Some((server, _, _)) if *server != src && is_hello(payload) => ProbeStep::Confirmed,
        Some(_) => ProbeStep::Continue,
    }
}

fn is_greeting(p: &[u8]) -> bool {
    p.len() >= 4 && &p[..3] == b"220" && matches!(p[3], b' ' | b'-')
}

fn is_hello(p: &[u8]) -> bool {
    p.len() >= 5
        && (p[..4].eq_ignore_ascii_case(b"EHLO") || p[..4].eq_ignore_ascii_case(b"HELO"))
        && matches!(p[4], b' ' | b'\r' | b'\n')
}
