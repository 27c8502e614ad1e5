//! DNS transactions of one worker: responses matched to queries by client, server, ports, id and
//! question; several responses to one query compared (the Hold-On method: an on-path injector's
//! forged answer races the real one, and the first to arrive is the suspect); and the per-client
//! memory of MX, address and TLSA answers that links an SMTP session to its lookup.

use super::message::{AnswerSet, DnsMessage, answer_set, qtype_text, rcode_text};
use super::sts::StsLinker;
use crate::flow::lineage::Lineage;
use crate::memory::{Usage, evict_oldest_tenth};
use crate::record::{DnsRecord, Endpoint, Micros, SessionRecord, Tlsa};
use crate::util::community_id;
use ahash::AHashMap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::mem::size_of;
use std::net::IpAddr;

/// Bounds and windows of DNS tracking.
#[derive(Clone, Copy, Debug)]
pub struct DnsConfig {
    /// A query unanswered after this long is counted and forgotten.
    pub query_timeout_us: i64,
    /// Responses to one query arriving within this long after the first are compared.
    pub injection_window_us: i64,
    /// An MX lookup this long before an SMTP session can have led to it.
    pub link_window_us: i64,
    /// Queries waiting for a response, and answered transactions within their comparison
    /// window, per worker (each).
    pub max_pending: usize,
    /// Bytes of both at most, per worker (the `dns_pending` share of the memory budget).
    pub max_pending_bytes: usize,
    /// Clients whose answers are remembered, per worker.
    pub max_clients: usize,
    /// Bytes of the per-client memory at most, per worker (the memory budget's share).
    pub max_client_bytes: usize,
    /// Bytes of the per-client MTA-STS memory at most, per worker (the `sts_clients` share).
    pub max_sts_bytes: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            query_timeout_us: 10_000_000,
            injection_window_us: 5_000_000,
            link_window_us: 600_000_000,
            max_pending: 100_000,
            max_pending_bytes: usize::MAX,
            max_clients: 100_000,
            max_client_bytes: usize::MAX,
            max_sts_bytes: usize::MAX,
        }
    }
}

/// Counters of DNS tracking.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DnsStats {
    /// Messages parsed.
    pub messages: u64,
    /// Payloads on port 53 that were not DNS.
    pub malformed: u64,
    /// Queries that never got a response.
    pub unanswered: u64,
    /// Responses without a query in the capture.
    pub unsolicited: u64,
    /// Extra responses with the same answers (retransmissions, duplicated packets).
    pub duplicate_responses: u64,
    /// Extra responses with different answers.
    pub conflicting_responses: u64,
    /// Transactions written (the mail-relevant ones and those with findings).
    pub transactions_written: u64,
    /// Queries or clients forgotten because a limit was reached.
    pub evicted: u64,
    /// SMTP sessions linked to the MX lookup that led to them.
    pub sessions_linked: u64,
    /// MX answers, addresses, CNAMEs, TLSA sets and lookups with findings a client's full
    /// memory forgot to make room for newer ones.
    pub client_entries_forgotten: u64,
    /// The MTA-STS memory's counters (reported in the summary's `mta_sts`, not under `dns`).
    #[serde(skip)]
    pub sts: super::sts::StsLinkStats,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TxKey {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    id: u16,
    question: (String, Option<RecordType>),
}

struct Pending {
    ts_us: i64,
    dnssec_ok: bool,
    transport: &'static str,
}

/// One response to a query, as the injection judge needs it.
pub struct Response {
    /// Capture time.
    pub ts_us: i64,
    /// IP TTL of the packet.
    pub ip_ttl: u8,
    /// The answers as (name, type, data), sorted. For the first response it is filled only when
    /// a second one arrives (until then it is empty): alone, it is compared with nothing, and
    /// the record keeps the same answers.
    pub answer_set: AnswerSet,
    /// Response code.
    pub rcode: ResponseCode,
}

/// A transaction whose comparison window has passed: the record built from its first response
/// and the facts the injection judge (`detect::dns_injection`) needs. It carries no findings.
pub struct ClosedTransaction {
    /// A response whose IP TTL was out of line for this client/resolver pair: (its TTL, the
    /// pair's settled TTL, its position among the responses).
    pub ttl_out: Option<(u8, u8, usize)>,
    /// The record, without findings.
    pub record: DnsRecord,
    /// When the query was seen.
    pub query_ts: Option<i64>,
    /// Every response (at most 16), first first.
    pub responses: Vec<Response>,
}

/// What one client learned from DNS recently. Each kind is bounded by a count; a full kind
/// forgets its least recently learned entries to make room (a busy resolver client asks about
/// more names than any bound, and a memory that refused new names once full kept only the
/// first few hundred it learned). What was forgotten is remembered as a time, so that `link`
/// never convicts a session that could have rested on it.
#[derive(Default)]
struct ClientMemory {
    last_us: i64,
    /// What this memory costs (counted in the tracker's total), kept as entries come and go.
    bytes: usize,
    /// (time, domain, exchanges, transaction id), oldest first.
    mx: VecDeque<(i64, String, Vec<String>, String)>,
    /// host -> (time, addresses, transaction id)
    addresses: AHashMap<String, (i64, Vec<IpAddr>, String)>,
    /// alias -> (time, target)
    cnames: AHashMap<String, (i64, String)>,
    /// owner -> (time, records, transaction id)
    tlsa: AHashMap<String, (i64, Vec<Tlsa>, String)>,
    /// transaction id -> (time, finding ids) (injection on that lookup)
    findings: AHashMap<String, (i64, Vec<String>)>,
    /// The newest MX answer dropped from the full list (its time): a session within
    /// `--mx-window` of it may have followed it.
    mx_forgot_us: Option<i64>,
    /// When addresses or CNAMEs were last forgotten: an MX host of a later session whose
    /// address is unknown may be one of them.
    names_forgot_us: Option<i64>,
}

/// MX answers and TLSA sets kept per client; addresses, CNAMEs and lookups with findings keep
/// `NAMES_PER_CLIENT`.
const MEMORY_PER_CLIENT: usize = 64;
/// Addresses, CNAMEs and lookups with findings kept per client.
const NAMES_PER_CLIENT: usize = MEMORY_PER_CLIENT * 4;

/// The estimated bytes of the per-client entries (`ClientMemory::bytes` is their sum and the
/// slot's): the strings by length, each map entry with its table overhead.
mod entry_bytes {
    use super::{IpAddr, Tlsa, size_of};

    /// A map entry's hash table overhead, roughly.
    const ENTRY: usize = 32;

    fn text(x: &str) -> usize {
        size_of::<String>() + x.len()
    }

    /// One MX answer (its slot in the list is counted by the list's capacity).
    pub(super) fn mx((_, domain, exchanges, tx): &(i64, String, Vec<String>, String)) -> usize {
        text(domain) + exchanges.iter().map(|e| text(e)).sum::<usize>() + text(tx)
    }

    pub(super) fn address(host: &str, (_, addrs, tx): &(i64, Vec<IpAddr>, String)) -> usize {
        ENTRY + text(host) + addrs.capacity() * size_of::<IpAddr>() + text(tx)
    }

    pub(super) fn cname(alias: &str, (_, target): &(i64, String)) -> usize {
        ENTRY + text(alias) + text(target)
    }

    pub(super) fn tlsa(owner: &str, (_, records, tx): &(i64, Vec<Tlsa>, String)) -> usize {
        ENTRY
            + text(owner)
            + text(tx)
            + records
                .iter()
                .map(|t| size_of::<Tlsa>() + t.data.len())
                .sum::<usize>()
    }

    pub(super) fn findings(tx: &str, (_, ids): &(i64, Vec<String>)) -> usize {
        ENTRY + text(tx) + ids.iter().map(|id| text(id)).sum::<usize>()
    }
}

/// A client's slot in the tracker's map, with its memory's fixed part.
const CLIENT_SLOT_BYTES: usize = 32 + size_of::<IpAddr>() + size_of::<ClientMemory>();
/// One slot of a client's MX list (counted by the list's capacity).
const MX_SLOT_BYTES: usize = size_of::<(i64, String, Vec<String>, String)>();

/// Makes room for a new key in one of a client's maps once it holds `cap`: its least recently
/// learned tenth goes (the rule of `evict_oldest_tenth`), and their bytes come off `bytes` (the
/// client's). Returns how many went (none while there is room).
fn make_room<V>(
    map: &mut AHashMap<String, V>,
    cap: usize,
    learned: impl Fn(&V) -> i64,
    entry_bytes: impl Fn(&str, &V) -> usize,
    bytes: &mut usize,
) -> u64 {
    if map.len() < cap {
        return 0;
    }
    let mut freed = 0;
    let gone = evict_oldest_tenth(
        map,
        &mut Usage::default(),
        learned,
        |_, _| 0,
        |k, v| freed += entry_bytes(k, v),
    );
    *bytes -= freed;
    gone
}

/// Puts `entry` under `key` in one of a client's maps of `cap` entries, replacing what the key
/// held or making room for it, and keeps `bytes` (the client's). Returns how many entries went
/// to make room.
fn put<V>(
    map: &mut AHashMap<String, V>,
    cap: usize,
    (key, entry): (String, V),
    learned: impl Fn(&V) -> i64,
    entry_bytes: impl Fn(&str, &V) -> usize,
    bytes: &mut usize,
) -> u64 {
    let (before, gone) = match map.get(&key) {
        Some(old) => (entry_bytes(&key, old), 0),
        None => (0, make_room(map, cap, learned, &entry_bytes, bytes)),
    };
    *bytes = *bytes - before + entry_bytes(&key, &entry);
    map.insert(key, entry);
    gone
}

impl DnsStats {
    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &DnsStats) {
        self.messages += o.messages;
        self.malformed += o.malformed;
        self.unanswered += o.unanswered;
        self.unsolicited += o.unsolicited;
        self.duplicate_responses += o.duplicate_responses;
        self.conflicting_responses += o.conflicting_responses;
        self.transactions_written += o.transactions_written;
        self.evicted += o.evicted;
        self.sessions_linked += o.sessions_linked;
        self.client_entries_forgotten += o.client_entries_forgotten;
        self.sts.merge(&o.sts);
    }
}

/// The client resolved MX hosts for a domain shortly before, yet connected to an address none
/// of them has: what `detect::dns_injection::unlisted_address` needs to judge it.
#[derive(Clone, Debug)]
pub struct UnlistedAddress {
    /// The domain whose MX lookup came last.
    pub recipient_domain: String,
    /// Its MX hosts.
    pub mx_hosts: Vec<String>,
    /// `host: [addresses]` for each MX host whose addresses the client looked up.
    pub mx_addresses: Vec<String>,
    /// The MX transaction.
    pub mx_transaction: String,
}

/// The DNS state of one worker.
pub struct DnsTracker {
    cfg: DnsConfig,
    sensor: String,
    /// IP TTL lineage of each resolver's responses to each client, with the last time seen.
    lineage: AHashMap<(IpAddr, IpAddr), (Lineage, i64)>,
    pending: AHashMap<TxKey, Pending>,
    answered: AHashMap<TxKey, ClosedTransaction>,
    clients: AHashMap<IpAddr, ClientMemory>,
    /// Size of `clients` (the `dns_clients` window), kept as clients learn and are forgotten.
    client_usage: Usage,
    /// When each client's memory was last evicted for the budget (bounded by `max_clients`).
    evicted_at: AHashMap<IpAddr, i64>,
    /// Once `evicted_at` was full: until this time plus `--mx-window`, every client counts as
    /// evicted.
    marks_lost_us: i64,
    /// The MTA-STS TXT answers and policy-host addresses each client received (and the policy
    /// fetches the worker reports), for `link`'s MTA-STS fields.
    pub sts: StsLinker,
    /// Counters.
    pub stats: DnsStats,
    /// Scratch space for the TLSA owner name `link` looks up (reused: no allocation per
    /// session).
    owner_buf: String,
}

/// Where a DNS message came from.
#[derive(Clone, Copy, Debug)]
pub struct DnsPacket {
    /// Capture time.
    pub ts_us: i64,
    /// Sender.
    pub src: (IpAddr, u16),
    /// Receiver.
    pub dst: (IpAddr, u16),
    /// IP TTL of the packet (the last segment's, over TCP).
    pub ip_ttl: u8,
    /// `udp` or `tcp`.
    pub transport: &'static str,
}

impl DnsTracker {
    /// An empty tracker.
    pub fn new(cfg: DnsConfig, sensor: String) -> DnsTracker {
        DnsTracker {
            cfg,
            sensor,
            lineage: AHashMap::new(),
            pending: AHashMap::new(),
            answered: AHashMap::new(),
            clients: AHashMap::new(),
            client_usage: Usage::default(),
            evicted_at: AHashMap::new(),
            marks_lost_us: i64::MIN,
            sts: StsLinker::new(cfg.link_window_us, true, cfg.max_sts_bytes),
            stats: DnsStats::default(),
            owner_buf: String::new(),
        }
    }

    /// Handles one DNS payload (a UDP datagram or one TCP message without its length prefix).
    pub fn payload(&mut self, pkt: DnsPacket, bytes: &[u8], closed: &mut Vec<ClosedTransaction>) {
        let Some(msg) = super::message::parse(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        self.stats.messages += 1;
        if msg.response {
            self.response(pkt, msg, closed);
        } else {
            let key = TxKey {
                client: pkt.src,
                server: pkt.dst,
                id: msg.id,
                question: (msg.qname, msg.qtype),
            };
            if !self.pending.contains_key(&key) {
                self.make_room(pkt.ts_us, closed);
            }
            self.pending.entry(key).or_insert(Pending {
                ts_us: pkt.ts_us,
                dnssec_ok: msg.dnssec_ok,
                transport: pkt.transport,
            });
        }
    }

    /// Whether this response's IP TTL is out of line with the resolver's earlier responses to
    /// this client: (its TTL, the settled TTL).
    fn ttl_out_of_line(&mut self, pkt: &DnsPacket) -> Option<(u8, u8)> {
        let pair = (pkt.dst.0, pkt.src.0);
        if !self.lineage.contains_key(&pair) && self.lineage.len() >= self.cfg.max_clients {
            // The least recently seen tenth of pairs goes (their TTL history starts again),
            // one selection per tenth rather than a scan per new pair. The lineage is not a
            // budget window: its sizes go nowhere.
            self.stats.evicted += evict_oldest_tenth(
                &mut self.lineage,
                &mut Usage::default(),
                |(_, last)| *last,
                |_, _| 0,
                |_, _| {},
            );
        }
        let (l, last) = self.lineage.entry(pair).or_default();
        *last = pkt.ts_us;
        let settled = l.settled_ttl();
        l.observe(pkt.ts_us, pkt.ip_ttl, 0, 1, false)
            .then_some((pkt.ip_ttl, settled))
    }

    fn response(
        &mut self,
        pkt: DnsPacket,
        mut msg: DnsMessage,
        closed: &mut Vec<ClosedTransaction>,
    ) {
        let ttl_out = self.ttl_out_of_line(&pkt);
        let key = TxKey {
            client: pkt.dst,
            server: pkt.src,
            id: msg.id,
            question: (msg.qname.clone(), msg.qtype),
        };
        if let Some(a) = self.answered.get_mut(&key) {
            if a.responses.len() == 1 {
                // The first response's set, deferred until now (see `Response::answer_set`):
                // its answers are the record's, untouched since.
                a.responses[0].answer_set = answer_set(&a.record.answers);
            }
            let resp = Response {
                ts_us: pkt.ts_us,
                ip_ttl: pkt.ip_ttl,
                answer_set: msg.answer_set(),
                rcode: msg.rcode,
            };
            let differs =
                resp.answer_set != a.responses[0].answer_set || resp.rcode != a.responses[0].rcode;
            if differs {
                // Known at once, so that an SMTP session that ends before the comparison window
                // closes still carries the finding's id.
                let id = crate::record::finding_id(&a.record.transaction_id, 0);
                if let Some(mem) = self.clients.get_mut(&key.client.0) {
                    let was = mem.bytes;
                    let tx = &a.record.transaction_id;
                    if !mem.findings.contains_key(tx) {
                        self.stats.client_entries_forgotten += make_room(
                            &mut mem.findings,
                            NAMES_PER_CLIENT,
                            |(t, _)| *t,
                            entry_bytes::findings,
                            &mut mem.bytes,
                        );
                    }
                    let entry = mem.findings.entry(tx.clone()).or_default();
                    if !entry.1.contains(&id) {
                        // A new entry counts 0 before (its key and overhead are added below).
                        let before = if entry.1.is_empty() {
                            entry.0 = pkt.ts_us;
                            0
                        } else {
                            entry_bytes::findings(tx, entry)
                        };
                        entry.1.push(id);
                        mem.bytes = mem.bytes - before + entry_bytes::findings(tx, entry);
                    }
                    self.client_usage.bytes = self.client_usage.bytes - was + mem.bytes;
                }
            }
            if a.ttl_out.is_none() {
                a.ttl_out = ttl_out.map(|(t, s)| (t, s, a.responses.len() + 1));
            }
            if a.responses.len() < 16 {
                a.responses.push(resp);
            }
            return;
        }
        let query = self.pending.remove(&key);
        if query.is_none() {
            self.stats.unsolicited += 1;
        }
        let start = query.as_ref().map_or(pkt.ts_us, |q| q.ts_us);
        let transport = query.as_ref().map_or(pkt.transport, |q| q.transport);
        let cid = community_id(
            if transport == "tcp" { 6 } else { 17 },
            key.client.0,
            key.client.1,
            key.server.0,
            key.server.1,
        );
        let tx = transaction_id(&cid, msg.id, &msg.qname, qtype_text(msg.qtype), start);
        // The MTA-STS memory reads the message; the client memory then takes what it keeps
        // out of it (the two are independent, so the order does not matter).
        self.sts.answer(key.client.0, &msg, pkt.ts_us, &tx);
        self.remember(&key, &mut msg, pkt.ts_us, &tx);
        let resp = Response {
            ts_us: pkt.ts_us,
            ip_ttl: pkt.ip_ttl,
            answer_set: Vec::new(),
            rcode: msg.rcode,
        };
        let record = DnsRecord {
            transaction_id: tx,
            ts: Micros(start),
            sensor: self.sensor.clone(),
            client: Endpoint::new(key.client.0, key.client.1),
            server: Endpoint::new(key.server.0, key.server.1),
            transport,
            community_id: cid,
            id: msg.id,
            qname: msg.qname,
            qtype: qtype_text(msg.qtype).to_string(),
            query_seen: query.is_some(),
            query_do: query.as_ref().is_some_and(|q| q.dnssec_ok),
            rcode: Some(rcode_text(msg.rcode)),
            aa: msg.aa,
            tc: msg.tc,
            ra: msg.ra,
            ad: msg.ad,
            rrsig: msg.rrsig,
            nsec: msg.nsec,
            answers: msg.answers,
            rtt_ms: query
                .as_ref()
                .map(|q| (pkt.ts_us - q.ts_us) as f64 / 1000.0),
            responses: 1,
            response_ip_ttl: Some(pkt.ip_ttl),
            findings: Vec::new(),
            finding_details: Vec::new(),
        };
        self.answered.insert(
            key,
            ClosedTransaction {
                ttl_out: ttl_out.map(|(t, s)| (t, s, 1)),
                record,
                query_ts: query.map(|q| q.ts_us),
                responses: vec![resp],
            },
        );
        self.make_room(pkt.ts_us, closed);
    }

    /// Learns the MX, CNAME, address and TLSA answers of a response for its client, moving them
    /// out of `msg` (nothing after this reads them).
    fn remember(&mut self, key: &TxKey, msg: &mut DnsMessage, ts_us: i64, tx: &str) {
        // Full by count or by bytes: the least recently active tenth goes (marked), as
        // `evict_clients` does. A scan that only dropped clients idle beyond the link window,
        // and refused the new one when none was, cost a pass over every client for each
        // response to a new address: a flood of spoofed clients made that one per packet.
        if !self.clients.contains_key(&key.client.0)
            && (self.clients.len() >= self.cfg.max_clients
                || self.client_usage.bytes > self.cfg.max_client_bytes)
        {
            self.evict_clients(ts_us);
        }
        let tx = tx.to_string();
        let usage = &mut self.client_usage;
        let stats = &mut self.stats;
        let mem = self.clients.entry(key.client.0).or_insert_with(|| {
            usage.entries += 1;
            usage.bytes += CLIENT_SLOT_BYTES;
            ClientMemory {
                bytes: CLIENT_SLOT_BYTES,
                ..ClientMemory::default()
            }
        });
        let was = mem.bytes;
        let mx_capacity = mem.mx.capacity();
        mem.last_us = ts_us;
        if !msg.mx.is_empty() {
            if mem.mx.len() >= MEMORY_PER_CLIENT
                && let Some(oldest) = mem.mx.pop_front()
            {
                mem.bytes -= entry_bytes::mx(&oldest);
                mem.mx_forgot_us = mem.mx_forgot_us.max(Some(oldest.0));
                stats.client_entries_forgotten += 1;
            }
            let mut ex = std::mem::take(&mut msg.mx);
            ex.sort();
            let answer = (
                ts_us,
                msg.qname.clone(),
                ex.into_iter().map(|(_, e)| e).collect(),
                tx.clone(),
            );
            mem.bytes += entry_bytes::mx(&answer);
            mem.mx.push_back(answer);
        }
        for (alias, target) in msg.cnames.drain(..) {
            let gone = put(
                &mut mem.cnames,
                NAMES_PER_CLIENT,
                (alias, (ts_us, target)),
                |(t, _)| *t,
                entry_bytes::cname,
                &mut mem.bytes,
            );
            if gone > 0 {
                stats.client_entries_forgotten += gone;
                mem.names_forgot_us = Some(ts_us);
            }
        }
        for (owner, addr) in msg.addresses.drain(..) {
            // The addresses of one answer gather in one entry; another answer starts it again.
            let learn = |e: &mut (i64, Vec<IpAddr>, String)| {
                if e.2 != tx {
                    *e = (ts_us, Vec::new(), tx.clone());
                }
                if !e.1.contains(&addr) && e.1.len() < 32 {
                    e.1.push(addr);
                }
            };
            if let Some(e) = mem.addresses.get_mut(&owner) {
                let before = entry_bytes::address(&owner, e);
                learn(e);
                mem.bytes = mem.bytes - before + entry_bytes::address(&owner, e);
                continue;
            }
            let gone = make_room(
                &mut mem.addresses,
                NAMES_PER_CLIENT,
                |(t, ..)| *t,
                entry_bytes::address,
                &mut mem.bytes,
            );
            if gone > 0 {
                stats.client_entries_forgotten += gone;
                mem.names_forgot_us = Some(ts_us);
            }
            let mut e = (ts_us, Vec::new(), tx.clone());
            learn(&mut e);
            mem.bytes += entry_bytes::address(&owner, &e);
            mem.addresses.insert(owner, e);
        }
        if !msg.tlsa.is_empty() {
            // Grouped by owner, first seen first (as many as a message has: a short scan).
            let mut recs: Vec<(String, Vec<Tlsa>)> = Vec::new();
            for (owner, t) in msg.tlsa.drain(..) {
                match recs.iter_mut().find(|(o, _)| *o == owner) {
                    Some((_, r)) => r.push(t),
                    None => recs.push((owner, vec![t])),
                }
            }
            for (owner, records) in recs {
                stats.client_entries_forgotten += put(
                    &mut mem.tlsa,
                    MEMORY_PER_CLIENT,
                    (owner, (ts_us, records, tx.clone())),
                    |(t, ..)| *t,
                    entry_bytes::tlsa,
                    &mut mem.bytes,
                );
            }
        }
        mem.bytes = mem.bytes + mem.mx.capacity() * MX_SLOT_BYTES - mx_capacity * MX_SLOT_BYTES;
        usage.bytes = usage.bytes - was + mem.bytes;
    }

    /// Forgets the least recently active tenth of the clients (the budget is spent), and marks
    /// them: for `--mx-window` their sessions cannot be convicted of going to an unlisted
    /// address, since the lookups that listed it may be what was forgotten.
    fn evict_clients(&mut self, now_us: i64) {
        if self.clients.is_empty() {
            return;
        }
        let horizon = now_us.saturating_sub(self.cfg.link_window_us);
        self.evicted_at.retain(|_, at| *at >= horizon);
        let marks = &mut self.evicted_at;
        let max_marks = self.cfg.max_clients;
        let mut lost = false;
        evict_oldest_tenth(
            &mut self.clients,
            &mut self.client_usage,
            |m| m.last_us,
            |_, m| m.bytes,
            |ip, _| {
                if marks.len() < max_marks || marks.contains_key(ip) {
                    marks.insert(*ip, now_us);
                } else {
                    lost = true;
                }
            },
        );
        if lost {
            self.marks_lost_us = now_us;
        }
    }

    /// True when the client's DNS memory may have lost lookups that a session starting at
    /// `ts_us` rests on (evicted after `ts_us - --mx-window`).
    fn evicted_within_window(&self, client: IpAddr, ts_us: i64) -> bool {
        let since = ts_us.saturating_sub(self.cfg.link_window_us);
        self.marks_lost_us >= since || self.evicted_at.get(&client).is_some_and(|at| *at >= since)
    }

    /// Size and evictions of the per-client memory (the `dns_clients` window).
    pub fn client_usage(&self) -> Usage {
        self.client_usage
    }

    /// Size of the transactions in flight (the `dns_pending` window): queries waiting and
    /// answers within their comparison window, at an estimated size each.
    pub fn pending_usage(&self) -> Usage {
        const QUERY: usize = 32 + size_of::<TxKey>() + size_of::<Pending>() + 64;
        const ANSWER: usize = 32 + size_of::<TxKey>() + size_of::<ClosedTransaction>() + 1024;
        Usage {
            entries: self.pending.len() + self.answered.len(),
            bytes: self.pending.len() * QUERY + self.answered.len() * ANSWER,
            evictions: self.stats.evicted,
            skipped: 0,
        }
    }

    /// Keeps the transactions in flight within their count and their share of the budget. What
    /// time has closed goes first; then, while still over, the oldest tenth of the queries
    /// waiting (forgotten: a late response is unsolicited) and of the answers within their
    /// comparison window (closed early: a later response is not compared), each counted in
    /// `evicted`. Closing everything at once, as a full table did before, cut every open
    /// comparison short and forgot every recent query together.
    fn make_room(&mut self, now_us: i64, closed: &mut Vec<ClosedTransaction>) {
        if !self.over_bounds() {
            return;
        }
        self.expire(now_us, false, closed);
        if self.pending.len() >= self.cfg.max_pending || self.over_bytes() {
            self.stats.evicted += evict_oldest_tenth(
                &mut self.pending,
                &mut Usage::default(),
                |p| p.ts_us,
                |_, _| 0,
                |_, _| {},
            );
        }
        if (self.answered.len() >= self.cfg.max_pending || self.over_bytes())
            && !self.answered.is_empty()
        {
            let mut first: Vec<i64> = self
                .answered
                .values()
                .map(|a| a.responses[0].ts_us)
                .collect();
            let cut = first.len() / 10;
            let pivot = *first.select_nth_unstable(cut).1;
            let before = closed.len();
            self.close_where(|a| a.responses[0].ts_us <= pivot, closed);
            self.stats.evicted += (closed.len() - before) as u64;
        }
    }

    /// Over the count of either table or over the bytes of both.
    fn over_bounds(&self) -> bool {
        self.pending.len() >= self.cfg.max_pending
            || self.answered.len() >= self.cfg.max_pending
            || self.over_bytes()
    }

    fn over_bytes(&self) -> bool {
        self.pending_usage().bytes > self.cfg.max_pending_bytes
    }

    /// Closes transactions whose comparison window has passed (oldest first, into `closed`) and
    /// forgets stale queries. With `all`, everything is closed (end of input).
    /// The caller judges each closed transaction and hands its record to [`DnsTracker::keep`].
    pub fn expire(&mut self, now_us: i64, all: bool, closed: &mut Vec<ClosedTransaction>) {
        let window = self.cfg.injection_window_us;
        self.close_where(|a| all || now_us - a.responses[0].ts_us > window, closed);
        self.expire_queries(now_us, all);
    }

    /// Closes the answered transactions `done` picks, oldest first, into `closed`.
    fn close_where(
        &mut self,
        done: impl Fn(&ClosedTransaction) -> bool,
        closed: &mut Vec<ClosedTransaction>,
    ) {
        // Taken out in one pass, keys dropped, not cloned (the order is fixed by the sort below).
        let mut finished: Vec<Option<ClosedTransaction>> = self
            .answered
            .extract_if(|_, a| done(a))
            .map(|(_, a)| Some(a))
            .collect();
        if finished.is_empty() {
            return;
        }
        // Ties in time are broken by the transaction id (a hash of the flow and the DNS id), not
        // by the hash map's iteration order, so the output is the same on every run. The sort
        // moves small indices, not the transactions (hundreds of bytes each, which a sort would
        // copy O(n log n) times); equal keys keep their extraction order (the index is the last
        // key), as the stable sort of the transactions did.
        let mut order: Vec<u32> = (0..finished.len() as u32).collect();
        {
            let key = |i: u32| {
                finished[i as usize]
                    .as_ref()
                    .map(|a| (a.record.ts.0, a.record.transaction_id.as_str()))
            };
            order.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)).then(a.cmp(&b)));
        }
        closed.reserve(order.len());
        for i in order {
            // Each index once (a permutation): every slot is full when it is taken.
            if let Some(mut a) = finished[i as usize].take() {
                self.count_responses(&mut a);
                closed.push(a);
            }
        }
    }

    /// Forgets queries unanswered for longer than the timeout (all of them with `all`),
    /// counting them.
    fn expire_queries(&mut self, now_us: i64, all: bool) {
        let timeout = self.cfg.query_timeout_us;
        let before = self.pending.len();
        self.pending
            .retain(|_, p| !all && now_us - p.ts_us <= timeout);
        self.stats.unanswered += (before - self.pending.len()) as u64;
    }

    /// Counts a closed transaction's repeated responses: the same answer again, or a different
    /// one (the injection judge's evidence).
    fn count_responses(&mut self, a: &mut ClosedTransaction) {
        a.record.responses = a.responses.len() as u32;
        let first = &a.responses[0];
        let differing = a.responses[1..]
            .iter()
            .filter(|r| r.answer_set != first.answer_set || r.rcode != first.rcode)
            .count();
        self.stats.duplicate_responses += (a.responses.len() - 1 - differing) as u64;
        self.stats.conflicting_responses += differing as u64;
    }

    /// The judged record of a closed transaction, if it is written: the mail-relevant ones (MX,
    /// TLSA, the MTA-STS and TLS-RPT TXT records, addresses of MX hosts this client asked
    /// about) and those with findings.
    pub fn keep(&mut self, record: DnsRecord) -> Option<DnsRecord> {
        let relevant = matches!(record.qtype.as_str(), "MX" | "TLSA")
            || (record.qtype == "TXT"
                && (record.qname.starts_with("_mta-sts.")
                    || record.qname.starts_with("_smtp._tls.")))
            || (matches!(record.qtype.as_str(), "A" | "AAAA")
                && self
                    .clients
                    .get(&record.client.ip)
                    .is_some_and(|m| m.mx.iter().any(|(_, _, ex, _)| ex.contains(&record.qname))));
        if relevant || !record.findings.is_empty() {
            self.stats.transactions_written += 1;
            Some(record)
        } else {
            None
        }
    }

    /// Ties an SMTP session to the MX lookup its client made before it: fills the session's
    /// DNS fields, or returns what the client resolved when its recent MX answers (whose
    /// addresses are known) do not include the server it connected to (the judge makes that
    /// `smtp-to-unlisted-ip`).
    pub fn link(&mut self, rec: &mut SessionRecord) -> Option<UnlistedAddress> {
        let mem = self.clients.get(&rec.client.ip)?;
        let window = self.cfg.link_window_us;
        let ts = rec.ts.0;
        // The recent MX answers, newest first (walked again below rather than collected).
        let recent = || {
            mem.mx
                .iter()
                .rev()
                .filter(move |(t, ..)| *t <= ts && ts - t <= window)
        };
        recent().next()?;
        // Names are looked up borrowed, along the CNAME chain.
        let resolve = |host: &str| -> Option<&(i64, Vec<IpAddr>, String)> {
            let mut name = host;
            for _ in 0..8 {
                if let Some(a) = mem.addresses.get(name) {
                    return Some(a);
                }
                name = mem.cnames.get(name)?.1.as_str();
            }
            None
        };
        let mut any_known = false;
        let mut any_unknown = false;
        for (_, domain, exchanges, mx_tx) in recent() {
            for ex in exchanges {
                let Some((_, addrs, addr_tx)) = resolve(ex) else {
                    any_unknown = true;
                    continue;
                };
                any_known = true;
                if addrs.contains(&rec.server.ip) {
                    rec.recipient_domain = Some(domain.clone());
                    rec.mx_host = Some(ex.clone());
                    rec.mx_addresses = addrs.clone();
                    // Room for the TLSA lookup's id too: no regrowth when there is one.
                    let mut ids = Vec::with_capacity(3);
                    ids.extend([mx_tx.clone(), addr_tx.clone()]);
                    rec.dns_transaction_ids = ids;
                    // The TLSA owner name, written into a buffer the tracker keeps.
                    let owner = &mut self.owner_buf;
                    owner.clear();
                    let _ = write!(owner, "_{}._tcp.{ex}", rec.server.port);
                    if let Some((_, tlsa, tlsa_tx)) = mem.tlsa.get(owner.as_str()) {
                        rec.mx_tlsa = tlsa.clone();
                        rec.dns_transaction_ids.push(tlsa_tx.clone());
                    }
                    for tx in &rec.dns_transaction_ids {
                        if let Some((_, ids)) = mem.findings.get(tx) {
                            rec.dns_finding_ids.extend(ids.iter().cloned());
                        }
                    }
                    self.stats.sessions_linked += 1;
                    return None;
                }
            }
        }
        // What listed this server may be what the budget or a full memory made us forget: an
        // MX answer dropped within the window, or the address of an MX host we cannot resolve.
        let since = ts.saturating_sub(window);
        let forgotten = mem.mx_forgot_us.is_some_and(|t| t >= since)
            || (any_unknown && mem.names_forgot_us.is_some_and(|t| t >= since));
        if any_known && (forgotten || self.evicted_within_window(rec.client.ip, rec.ts.0)) {
            self.client_usage.skipped += 1;
            return None;
        }
        if any_known {
            let (_, domain, exchanges, mx_tx) = recent().next()?;
            let known: Vec<String> = exchanges
                .iter()
                .filter_map(|e| resolve(e).map(|(_, a, _)| format!("{e}: {a:?}")))
                .collect();
            return Some(UnlistedAddress {
                recipient_domain: domain.clone(),
                mx_hosts: exchanges.clone(),
                mx_addresses: known,
                mx_transaction: mx_tx.clone(),
            });
        }
        None
    }
}

/// A stable id for a DNS transaction.
fn transaction_id(cid: &str, id: u16, qname: &str, qtype: &str, ts_us: i64) -> String {
    crate::util::stable_id(
        b'D',
        &[
            cid.as_bytes(),
            &id.to_be_bytes(),
            qname.as_bytes(),
            qtype.as_bytes(),
            &ts_us.to_be_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A response for `example.com MX` with one MX (the same as `message`'s test message).
    fn mx_response(id: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[
            0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, // QR RD RA, one question, one answer
            7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0, 15, 0, 1, 0xc0,
            12, 0, 15, 0, 1, 0, 0, 1, 44, 0, 7, 0, 10, 2, b'm', b'x', 0xc0, 12,
        ]);
        m
    }

    /// Responses from one resolver to `clients` new client addresses, a second apart.
    fn answer_new_clients(t: &mut DnsTracker, clients: u32) {
        let resolver = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53));
        let mut closed = Vec::new();
        for i in 0..clients {
            let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let pkt = DnsPacket {
                ts_us: 1_780_000_000_000_000 + i64::from(i) * 1_000_000,
                src: (resolver, 53),
                dst: (client, 40_000),
                ip_ttl: 64,
                transport: "udp",
            };
            t.payload(pkt, &mx_response(i as u16), &mut closed);
        }
    }

    /// What a client's memory costs, walked entry by entry (the tracker keeps the sum as entries
    /// come and go).
    fn walked_bytes(m: &ClientMemory) -> usize {
        CLIENT_SLOT_BYTES
            + m.mx.capacity() * MX_SLOT_BYTES
            + m.mx.iter().map(entry_bytes::mx).sum::<usize>()
            + m.addresses
                .iter()
                .map(|(k, v)| entry_bytes::address(k, v))
                .sum::<usize>()
            + m.cnames
                .iter()
                .map(|(k, v)| entry_bytes::cname(k, v))
                .sum::<usize>()
            + m.tlsa
                .iter()
                .map(|(k, v)| entry_bytes::tlsa(k, v))
                .sum::<usize>()
            + m.findings
                .iter()
                .map(|(k, v)| entry_bytes::findings(k, v))
                .sum::<usize>()
    }

    #[test]
    fn a_clients_memory_is_counted_as_it_learns_and_forgets() {
        let mut t = DnsTracker::new(DnsConfig::default(), "s".into());
        let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let resolver = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53));
        let key = TxKey {
            client: (client, 40_000),
            server: (resolver, 53),
            id: 1,
            question: (String::new(), None),
        };
        // MX answers, addresses (new hosts and hosts seen again), CNAMEs and TLSA sets, more of
        // each than a client keeps.
        for i in 0..3_000u32 {
            let mut msg = DnsMessage {
                qname: format!("q{i}.example"),
                ..DnsMessage::default()
            };
            if i % 7 == 0 {
                msg.mx = vec![
                    (10, format!("mx{}.example", i % 90)),
                    (20, "backup.example".into()),
                ];
            }
            msg.addresses = (0..i % 3)
                .map(|j| {
                    let host = format!("h{}.example", (i * 7 + j) % 400);
                    (host, IpAddr::V4(Ipv4Addr::from(i * 3 + j)))
                })
                .collect();
            if i % 5 == 0 {
                let alias = format!("alias{}.example", i % 300);
                msg.cnames = vec![(alias, format!("h{}.example", i % 400))];
            }
            if i % 11 == 0 {
                let tlsa = Tlsa {
                    usage: 3,
                    selector: 1,
                    matching_type: 1,
                    data: vec![i as u8; 32 + (i % 3) as usize],
                };
                msg.tlsa = vec![(format!("_25._tcp.mx{}.example", i % 90), tlsa)];
            }
            t.remember(&key, &mut msg, 1_000_000 * i64::from(i), &format!("tx{i}"));
            let m = &t.clients[&client];
            assert_eq!(m.bytes, walked_bytes(m), "after response {i}");
            assert_eq!(t.client_usage.bytes, m.bytes, "after response {i}");
            assert!(m.mx.len() <= MEMORY_PER_CLIENT && m.tlsa.len() <= MEMORY_PER_CLIENT);
            assert!(m.addresses.len() <= NAMES_PER_CLIENT && m.cnames.len() <= NAMES_PER_CLIENT);
        }
        let m = &t.clients[&client];
        assert!(
            m.addresses
                .contains_key(&format!("h{}.example", (2_999 * 7 + 1) % 400))
        );
        assert_eq!(
            m.mx.back().unwrap().1,
            "q2996.example",
            "the newest MX answer is kept"
        );
        assert!(m.mx_forgot_us.is_some() && m.names_forgot_us.is_some());
        let forgotten = t.stats.client_entries_forgotten;
        assert!(forgotten > 1_000, "{forgotten}");
        // Injected lookups (a second, different answer to each): their finding ids are kept
        // per lookup, more than a client keeps.
        let mut closed = Vec::new();
        for id in 0..300u16 {
            let pkt = DnsPacket {
                ts_us: 4_000_000_000 + i64::from(id) * 1_000,
                src: (resolver, 53),
                dst: (client, 40_000),
                ip_ttl: 64,
                transport: "udp",
            };
            let real = mx_response(id);
            let mut forged = real.clone();
            let n = forged.len();
            forged[n - 3] = b'y'; // mx.example.com -> my.example.com
            t.payload(pkt, &real, &mut closed);
            t.payload(pkt, &forged, &mut closed);
            let m = &t.clients[&client];
            assert_eq!(m.bytes, walked_bytes(m), "after injection {id}");
            assert_eq!(t.client_usage.bytes, m.bytes);
        }
        let m = &t.clients[&client];
        assert!(m.findings.len() <= NAMES_PER_CLIENT && m.findings.len() > 200);
        assert!(t.stats.client_entries_forgotten > forgotten);
    }

    /// `mx_response`'s question alone, as the client sends it.
    fn mx_query(id: u16) -> Vec<u8> {
        let mut q = mx_response(id);
        q[2] = 0x01; // RD, not a response
        q[3] = 0;
        q[7] = 0; // no answer
        q.truncate(12 + 13 + 4);
        q
    }

    /// A packet between one client port and the resolver, `ms` milliseconds into the run.
    fn between(ms: i64, from_client: bool) -> DnsPacket {
        let client = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000);
        let resolver = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), 53);
        let (src, dst) = if from_client {
            (client, resolver)
        } else {
            (resolver, client)
        };
        DnsPacket {
            ts_us: 1_780_000_000_000_000 + ms * 1_000,
            src,
            dst,
            ip_ttl: 64,
            transport: "udp",
        }
    }

    /// A tracker with room for 1,000 transactions of each kind, sent 1,001 queries (or
    /// answers) a millisecond apart: all within the query timeout and one comparison window.
    fn one_too_many(queries: bool) -> (DnsTracker, Vec<ClosedTransaction>) {
        let cfg = DnsConfig {
            max_pending: 1_000,
            ..DnsConfig::default()
        };
        let mut t = DnsTracker::new(cfg, "s".into());
        let mut closed = Vec::new();
        for id in 0..=1_000u16 {
            let message = if queries {
                mx_query(id)
            } else {
                mx_response(id)
            };
            t.payload(between(i64::from(id), queries), &message, &mut closed);
        }
        (t, closed)
    }

    #[test]
    fn a_full_table_of_queries_forgets_its_oldest_tenth_not_every_query() {
        let (mut t, mut closed) = one_too_many(true);
        assert!(
            t.pending.len() <= 1_000 && t.pending.len() >= 850,
            "{}",
            t.pending.len()
        );
        assert!(t.stats.evicted >= 100, "{:?}", t.stats);
        // The recent queries are all still waiting: their answers are matched, not unsolicited.
        for id in 200..=1_000u16 {
            t.payload(between(1_500, false), &mx_response(id), &mut closed);
        }
        assert_eq!(t.stats.unsolicited, 0, "{:?}", t.stats);
    }

    #[test]
    fn full_answer_tables_close_their_oldest_tenth_early_within_count_and_bytes() {
        let (t, mut closed) = one_too_many(false);
        assert!(
            closed.len() >= 100 && closed.len() <= 200,
            "{}",
            closed.len()
        );
        assert!(t.answered.len() <= 1_000);
        // The oldest went first.
        assert!(closed.iter().all(|c| c.record.id < 200), "oldest first");
        // The bytes bound the same way: room for about 50 answers.
        let one = t.pending_usage().bytes / t.answered.len();
        let cfg = DnsConfig {
            max_pending_bytes: 50 * one,
            ..DnsConfig::default()
        };
        let mut t = DnsTracker::new(cfg, "s".into());
        for id in 0..500u16 {
            t.payload(between(i64::from(id), false), &mx_response(id), &mut closed);
            assert!(t.pending_usage().bytes <= 51 * one, "{id}");
        }
        assert!(t.answered.len() >= 40, "{}", t.answered.len());
        assert!(t.stats.evicted >= 400, "{:?}", t.stats);
    }

    #[test]
    fn full_client_tables_make_room_by_age_instead_of_refusing_new_clients() {
        let cfg = DnsConfig {
            max_clients: 20,
            ..DnsConfig::default()
        };
        let mut t = DnsTracker::new(cfg, "s".into());
        // All within the link window: before, every client after the twentieth was refused
        // (after a scan of the whole table) and nothing was evicted.
        answer_new_clients(&mut t, 200);
        assert!(t.clients.len() <= 20, "{}", t.clients.len());
        assert!(t.lineage.len() <= 20, "{}", t.lineage.len());
        let newest = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 199));
        assert!(
            t.clients.contains_key(&newest),
            "the newest client is remembered"
        );
        assert!(t.clients[&newest].mx.len() == 1);
        assert!(t.client_usage.evictions >= 180, "{:?}", t.client_usage);
        // The evicted clients are marked: their sessions skip smtp-to-unlisted-ip.
        let oldest = IpAddr::V4(Ipv4Addr::from(0x0a00_0000));
        assert!(t.evicted_within_window(oldest, 1_780_000_000_000_000 + 200_000_000));
        assert!(
            t.stats.evicted >= 180,
            "lineage evictions {}",
            t.stats.evicted
        );
    }
}
