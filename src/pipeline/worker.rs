//! What one worker thread does with its share of the packets: the flow table follows TCP, and
//! [`MailApp`] — the per-flow dispatcher — decides which flows are SMTP (by port or by content)
//! or DNS over TCP, feeds their bytes to the SMTP and DNS parsers, and turns every finished SMTP
//! flow into a session record tied to the DNS lookups that led to it. UDP goes straight to the
//! DNS tracker.
//!
//! This is the one place where the protocol-free flow table meets the protocols: `flow` knows no
//! parser, and the parsers know no flow table.

use crate::decode::{PacketMeta, TcpFlags, Transport};
use crate::detect::{dns_injection, rules};
use crate::dns::tracker::ClosedTransaction;
use crate::dns::{DnsConfig, DnsPacket, DnsStats, DnsTracker};
use crate::flow::FlowSummary;
use crate::flow::reassembly::{ReassemblyLimits, StreamEvent};
use crate::flow::table::{
    Confirmed, DirectionNeeds, Endpoint, FlowTable, Open, ProbeStep, StreamApp, TableConfig,
};
use crate::memory::{Gauges, Usage, Window};
use crate::record::{DnsRecord, EndReason, SessionRecord, Side};
use crate::smtp::{SmtpConfig, SmtpSession};
use crate::tls::fetch::{FetchKind, PolicyFetch};
use crate::util::CaptureClock;

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

/// Configuration of every worker: the flow table's bounds and which flows are mail.
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
    /// Bytes of this worker's flows at most (its part of the memory budget's share).
    pub max_flow_bytes: usize,
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
    /// Follow TCP/443 far enough to recognise MTA-STS policy fetches (`--no-mta-sts-fetches`
    /// turns it off).
    pub mta_sts_fetches: bool,
}

impl FlowConfig {
    fn table(&self) -> TableConfig {
        TableConfig {
            max_flows: self.max_flows,
            idle_timeout_us: self.idle_timeout_us,
            reassembly: self.reassembly,
            max_bytes: self.max_flow_bytes,
        }
    }
}

/// Counters of one worker's flows.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FlowStats {
    /// TCP packets handled.
    pub tcp_packets: u64,
    /// UDP packets handled.
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
    /// Flows no longer followed once they proved to be of no interest (TCP/443 connections
    /// that are not MTA-STS policy fetches): their later packets are only looked up.
    pub released_flows: u64,
    /// SMTP flows closed by the idle timeout.
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
    /// Acknowledgments of new data in SMTP flows (the capture-loss estimate's denominator).
    pub acks: u64,
    /// Holes in SMTP flows that the peer acknowledged: data lost before the sensor.
    pub acked_gaps: u64,
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
        self.released_flows += o.released_flows;
        self.timed_out_flows += o.timed_out_flows;
        self.sessions += o.sessions;
        self.gaps += o.gaps;
        self.gap_bytes += o.gap_bytes;
        self.overlap_conflicts += o.overlap_conflicts;
        self.retransmissions += o.retransmissions;
        self.acks += o.acks;
        self.acked_gaps += o.acked_gaps;
        self.overlong_lines += o.overlong_lines;
        self.malformed_lines += o.malformed_lines;
        self.time_jumps_held += o.time_jumps_held;
    }
}

/// What a worker produces: finished SMTP sessions and DNS transactions, each stamped with the
/// worker's capture time when it was produced, so the output stage can merge the workers'
/// streams in capture order (and judge cross-client evidence the same way on every run).
#[derive(Default)]
pub struct Outputs {
    /// Session records, not yet judged across sessions. Boxed where they are made, so that
    /// neither this vector's growth nor the merge downstream moves a whole record.
    pub sessions: Vec<Box<SessionRecord>>,
    /// DNS transactions of interest, with their findings (boxed for the same reason).
    pub dns: Vec<Box<DnsRecord>>,
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

/// The DNS port.
const DNS_PORT: u16 = 53;
/// The port MTA-STS policies are fetched from (HTTPS, RFC 8461 §3.3).
pub const POLICY_FETCH_PORT: u16 = 443;
/// The largest DNS message over TCP (a two-byte length prefix).
const MAX_DNS_TCP_MESSAGE: usize = 65_535;
/// Payload packets a probe looks at before giving up.
const PROBE_PACKETS: u16 = 16;
/// Greeting bytes a probe keeps.
const PROBE_BANNER: usize = 4096;

/// The protocol state of one followed flow.
#[allow(clippy::large_enum_variant)] // the flow table boxes each flow once; no second box
pub enum MailFlow {
    /// An SMTP conversation.
    Smtp(SmtpSession),
    /// DNS over TCP: length-prefixed messages.
    Dns(DnsStream),
    /// A TCP/443 connection that may be an MTA-STS policy fetch.
    Fetch(FetchFlow),
}

/// A TCP/443 connection followed until its ClientHello says whether it fetches an MTA-STS
/// policy, and then only until both sides sent application data.
pub struct FetchFlow {
    client: Endpoint,
    server: Endpoint,
    fetch: PolicyFetch,
    /// The ClientHello was read (the linker was told what the connection is).
    named: bool,
    /// A hole in the handshake: the record walk lost its place; the end alone decides.
    lost: bool,
}

/// Both directions of a DNS-over-TCP flow, split into messages.
#[derive(Default)]
pub struct DnsStream {
    bufs: [Vec<u8>; 2],
    /// A hole or an oversized message in the current segment: the framing is lost.
    lost: [bool; 2],
}

/// A flow on a non-mail port, watched until it proves to be SMTP (a 220 greeting answered by
/// EHLO or HELO) or not.
pub struct SmtpProbe {
    first_us: i64,
    syn_from: Option<Endpoint>,
    /// The candidate greeting: who sent it, its sequence number, its bytes.
    banner: Option<(Endpoint, u32, Vec<u8>)>,
    packets: u16,
}

/// The per-flow dispatcher: SMTP and DNS over the protocol-free flow table.
pub struct MailApp {
    cfg: FlowConfig,
    /// DNS transactions and the per-client answers that link sessions to lookups.
    pub dns: DnsTracker,
    /// Counters (the TCP layer's are added by [`Worker::stats`]).
    stats: FlowStats,
    /// What was produced since the last hand-off.
    pub out: Outputs,
    /// DNS transactions closed and not yet judged (scratch, empty between calls).
    closed: Vec<ClosedTransaction>,
}

impl MailApp {
    fn udp(&mut self, meta: &PacketMeta, payload: &[u8]) {
        self.stats.udp_packets += 1;
        if meta.sport == DNS_PORT || meta.dport == DNS_PORT {
            let pkt = DnsPacket {
                ts_us: meta.ts_us,
                src: (meta.src, meta.sport),
                dst: (meta.dst, meta.dport),
                ip_ttl: meta.ip_ttl,
                transport: "udp",
            };
            self.dns.payload(pkt, payload, &mut self.closed);
            self.write_closed();
        }
    }

    /// Judges the DNS transactions the tracker closed and hands on those worth writing.
    fn write_closed(&mut self) {
        for t in self.closed.drain(..) {
            let record = dns_injection::judge_transaction(t);
            if let Some(record) = self.dns.keep(record) {
                self.out.dns.push(Box::new(record));
            }
        }
    }

    /// Closes DNS transactions whose comparison window has passed (all of them with `all`).
    fn expire_dns(&mut self, now_us: i64, all: bool) {
        self.dns.expire(now_us, all, &mut self.closed);
        self.write_closed();
    }

    /// Judges a finished SMTP flow and hands its record on, tied to the DNS lookup that led
    /// to it.
    fn finish_smtp(&mut self, mut session: SmtpSession, summary: &FlowSummary, end: EndReason) {
        match end {
            EndReason::Evicted => self.stats.evicted_sessions += 1,
            EndReason::Timeout => self.stats.timed_out_flows += 1,
            _ => {}
        }
        session.finish(end);
        let facts = std::mem::take(&mut session.facts);
        let stats = &mut self.stats;
        stats.gaps += u64::from(summary.gaps);
        stats.gap_bytes += summary.gap_bytes;
        stats.retransmissions += u64::from(summary.retransmissions);
        stats.acks += u64::from(summary.acks);
        stats.acked_gaps += u64::from(summary.acked_gaps);
        stats.overlap_conflicts +=
            (facts.conflicts.len() as u64) + u64::from(facts.conflicts_dropped);
        stats.overlong_lines += u64::from(facts.overlong_lines);
        stats.malformed_lines += u64::from(facts.malformed_lines);
        if !facts.recognised {
            stats.not_smtp_flows += 1;
            return;
        }
        stats.sessions += 1;
        let mut rec = rules::build_record(summary, facts, end, &self.cfg.sensor);
        if let Some(unlisted) = self.dns.link(&mut rec) {
            dns_injection::unlisted_address(&mut rec, &unlisted);
        }
        self.dns.sts.link(&mut rec);
        self.out.sessions.push(Box::new(rec));
    }
}

impl StreamApp for MailApp {
    type Flow = MailFlow;
    type Probe = SmtpProbe;

    fn open(
        &mut self,
        src: Endpoint,
        dst: Endpoint,
        flags: TcpFlags,
        ts_us: i64,
    ) -> Open<MailFlow, SmtpProbe> {
        if src.1 == DNS_PORT || dst.1 == DNS_PORT {
            let (client, server) = if dst.1 == DNS_PORT {
                (src, dst)
            } else {
                (dst, src)
            };
            return Open::Follow {
                client,
                server,
                flow: MailFlow::Dns(DnsStream::default()),
            };
        }
        if self.cfg.mta_sts_fetches && (src.1 == POLICY_FETCH_PORT || dst.1 == POLICY_FETCH_PORT) {
            let (client, server) = if dst.1 == POLICY_FETCH_PORT {
                (src, dst)
            } else {
                (dst, src)
            };
            self.dns.sts.fetch_opened(client, server, ts_us);
            return Open::Follow {
                client,
                server,
                flow: MailFlow::Fetch(FetchFlow {
                    client,
                    server,
                    fetch: PolicyFetch::new(ts_us),
                    named: false,
                    lost: false,
                }),
            };
        }
        let ports = &self.cfg.smtp_ports;
        if ports.contains(src.1) || ports.contains(dst.1) {
            let (client, server) = orient(src, dst, flags, ports);
            self.stats.smtp_flows += 1;
            let implicit = self.cfg.implicit_tls_ports.contains(server.1);
            return Open::Follow {
                client,
                server,
                flow: MailFlow::Smtp(SmtpSession::new(self.cfg.smtp, implicit)),
            };
        }
        if self.cfg.probe_other_ports {
            self.stats.probed_flows += 1;
            return Open::Probe(SmtpProbe {
                first_us: ts_us,
                syn_from: None,
                banner: None,
                packets: 0,
            });
        }
        Open::Ignore
    }

    fn probe(
        &mut self,
        probe: &mut SmtpProbe,
        src: Endpoint,
        seq: u32,
        flags: TcpFlags,
        payload: &[u8],
        _ts_us: i64,
    ) -> ProbeStep<MailFlow> {
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
            Some((server, _, _)) if *server != src && is_hello(payload) => {
                let Some((server, banner_seq, banner)) = probe.banner.take() else {
                    return ProbeStep::Continue;
                };
                self.stats.recognised_by_content += 1;
                let implicit = self.cfg.implicit_tls_ports.contains(server.1);
                ProbeStep::Follow(Confirmed {
                    client: src,
                    server,
                    first_us: probe.first_us,
                    mid_stream: probe.syn_from.is_none(),
                    replay: Some((banner_seq, banner)),
                    flow: MailFlow::Smtp(SmtpSession::new(self.cfg.smtp, implicit)),
                })
            }
            Some(_) => ProbeStep::Continue,
        }
    }

    fn needs(&self, flow: &MailFlow, side: Side) -> DirectionNeeds {
        match flow {
            MailFlow::Smtp(session) => DirectionNeeds {
                bytes: session.wants_bytes(side),
                keep_recent: session.dialog_phase(side),
                acked_holes: session.wants_bytes(side),
            },
            MailFlow::Dns(_) => DirectionNeeds {
                bytes: true,
                keep_recent: false,
                acked_holes: false,
            },
            MailFlow::Fetch(f) => DirectionNeeds {
                bytes: !f.lost && f.fetch.wants_bytes(side == Side::Client),
                keep_recent: false,
                acked_holes: false,
            },
        }
    }

    fn on_stream(&mut self, flow: &mut MailFlow, side: Side, event: StreamEvent<'_>, ts_us: i64) {
        match flow {
            MailFlow::Smtp(session) => session.on_stream(side, event, ts_us),
            MailFlow::Fetch(f) => {
                match event {
                    StreamEvent::Data { bytes, .. } if !f.lost => {
                        f.fetch.feed(side == Side::Client, bytes)
                    }
                    StreamEvent::Gap { .. } => f.lost = true,
                    _ => {}
                }
                if !f.named && f.fetch.kind() != FetchKind::Unknown {
                    f.named = true;
                    self.dns
                        .sts
                        .fetch_update(f.client, f.server, &f.fetch, None);
                }
            }
            MailFlow::Dns(stream) => {
                let i = side_index(side);
                let buf = &mut stream.bufs[i];
                match event {
                    StreamEvent::Data { bytes, .. } => {
                        if buf.len() + bytes.len() <= MAX_DNS_TCP_MESSAGE + 2 {
                            buf.extend_from_slice(bytes);
                        } else {
                            stream.lost[i] = true;
                        }
                    }
                    StreamEvent::Gap { .. } => stream.lost[i] = true,
                    StreamEvent::Conflict(_) => {}
                }
            }
        }
    }

    fn segment_done(&mut self, flow: &mut MailFlow, side: Side, meta: &PacketMeta) {
        let MailFlow::Dns(stream) = flow else {
            return;
        };
        let i = side_index(side);
        let buf = &mut stream.bufs[i];
        if std::mem::take(&mut stream.lost[i]) {
            // A hole or an oversized message: the framing is lost for this direction.
            self.dns.stats.malformed += 1;
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
            self.dns.payload(pkt, &buf[2..len + 2], &mut self.closed);
            buf.drain(..len + 2);
            self.write_closed();
        }
    }

    fn wants_tail(&self, flow: &MailFlow) -> bool {
        matches!(flow, MailFlow::Smtp(_))
    }

    /// A TCP/443 connection whose ClientHello named another host (or that is not TLS) is of no
    /// further use: the linker already forgot it, and its `close` would change nothing.
    fn done(&self, flow: &MailFlow) -> bool {
        matches!(flow, MailFlow::Fetch(f) if f.named && f.fetch.kind() == FetchKind::Other)
    }

    fn close(&mut self, flow: MailFlow, summary: &FlowSummary, end: EndReason) {
        match flow {
            MailFlow::Smtp(session) => self.finish_smtp(session, summary, end),
            MailFlow::Fetch(f) => {
                self.dns
                    .sts
                    .fetch_update(f.client, f.server, &f.fetch, Some(end))
            }
            MailFlow::Dns(_) => {}
        }
    }

    fn swept(&mut self, now_us: i64) {
        self.expire_dns(now_us, false);
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// One worker: its capture clock, its flow table and the dispatcher on top.
pub struct Worker {
    clock: CaptureClock,
    table: FlowTable<MailApp>,
    app: MailApp,
}

impl Worker {
    /// A worker with empty state.
    pub fn new(cfg: FlowConfig) -> Worker {
        let mut dns = DnsTracker::new(cfg.dns, cfg.sensor.clone());
        dns.sts.follow_fetches = cfg.mta_sts_fetches;
        Worker {
            clock: CaptureClock::default(),
            table: FlowTable::new(cfg.table()),
            app: MailApp {
                dns,
                cfg,
                stats: FlowStats::default(),
                out: Outputs::default(),
                closed: Vec::new(),
            },
        }
    }

    /// Handles one packet; what finishes lands in [`Worker::outputs`].
    pub fn packet(&mut self, meta: &PacketMeta, payload: &[u8]) {
        let ts = self.clock.observe(meta.ts_us);
        self.app.stats.time_jumps_held = self.clock.held;
        let owned;
        let meta = if ts == meta.ts_us {
            meta
        } else {
            owned = PacketMeta { ts_us: ts, ..*meta };
            &owned
        };
        self.table.advance(&mut self.app, meta.ts_us);
        if let Transport::Tcp { .. } = meta.transport {
            self.table.packet(&mut self.app, meta, payload);
        } else {
            self.app.udp(meta, payload);
        }
    }

    /// Moves capture time forward without a packet (the reader's watermark).
    pub fn advance(&mut self, ts_us: i64) {
        self.table.advance(&mut self.app, ts_us);
    }

    /// Ends every flow and every pending DNS transaction (end of input).
    pub fn finish_all(&mut self) {
        self.table.finish_all(&mut self.app);
        let now = self.table.now_us();
        self.app.expire_dns(now, true);
    }

    /// Publishes the sizes of this worker's windows (once per batch: a few relaxed stores).
    pub fn publish(&self, gauges: &Gauges) {
        gauges.publish(
            Window::Flows,
            Usage {
                entries: self.table.len(),
                bytes: self.table.bytes(),
                evictions: self.table.stats.evicted_flows,
                skipped: 0,
            },
        );
        gauges.publish(Window::DnsPending, self.app.dns.pending_usage());
        gauges.publish(Window::DnsClients, self.app.dns.client_usage());
        gauges.publish(Window::StsClients, self.app.dns.sts.usage());
    }

    /// Capture time as this worker has seen it.
    pub fn now_us(&self) -> i64 {
        self.table.now_us()
    }

    /// What was produced and not yet handed on.
    pub fn outputs(&mut self) -> &mut Outputs {
        &mut self.app.out
    }

    /// The worker's flow counters (TCP layer and dispatcher together) and DNS counters.
    pub fn stats(&self) -> (FlowStats, DnsStats) {
        let mut flow = self.app.stats;
        flow.tcp_packets = self.table.stats.tcp_packets;
        flow.evicted_flows = self.table.stats.evicted_flows;
        flow.released_flows = self.table.stats.released_flows;
        let mut dns = self.app.dns.stats;
        dns.sts = self.app.dns.sts.stats;
        (flow, dns)
    }
}

/// Who is the client of a new flow on a mail port.
fn orient(
    src: Endpoint,
    dst: Endpoint,
    flags: TcpFlags,
    mail_ports: &PortSet,
) -> (Endpoint, Endpoint) {
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

fn is_greeting(p: &[u8]) -> bool {
    p.len() >= 4 && &p[..3] == b"220" && matches!(p[3], b' ' | b'-')
}

fn is_hello(p: &[u8]) -> bool {
    p.len() >= 5
        && (p[..4].eq_ignore_ascii_case(b"EHLO") || p[..4].eq_ignore_ascii_case(b"HELO"))
        && matches!(p[4], b' ' | b'\r' | b'\n')
}
