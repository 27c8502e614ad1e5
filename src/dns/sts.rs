//! The MTA-STS side of the session linker (RFC 8461): per client, the `_mta-sts.<domain>` TXT
//! answers it received, the addresses it got for policy hosts `mta-sts.<domain>`, and its
//! policy-fetch connections on TCP/443 with how they ended. [`StsLinker::link`] ties a session
//! to what its client did for the session's recipient domain before the session, the way
//! `DnsTracker::link` ties it to the MX, address and TLSA lookups.
//!
//! Every map is bounded by a count and by bytes: [`MAX_CLIENTS`] clients and the worker's share
//! of the memory budget (the `sts_clients` window; the least recently active tenth goes when
//! either is reached), and [`PER_CLIENT`] entries of each kind per client (the oldest goes).
//! A TCP/443 connection is remembered only while it may be a policy fetch: one whose
//! ClientHello names another host, or that ended without a ClientHello and went to no address
//! the client had resolved for a policy host, is forgotten (and a client left with nothing is
//! forgotten too), so HTTPS traffic that is not MTA-STS holds no memory once it ends.

use super::message::DnsMessage;
use crate::memory::{Usage, evict_oldest_tenth};
use crate::record::{EndReason, SessionRecord, StsFetch};
use crate::tls::fetch::{FetchKind, POLICY_HOST_PREFIX, PolicyFetch};
use crate::util::{community_id, flow_id};
use ahash::AHashMap;
use hickory_proto::rr::RecordType;
use serde::Serialize;
use std::mem::size_of;
use std::net::IpAddr;

/// Clients remembered per worker.
pub const MAX_CLIENTS: usize = 100_000;
/// TXT answers, policy-host addresses and fetches remembered per client, each.
pub const PER_CLIENT: usize = 64;
/// The TXT owner prefix (RFC 8461 §3.1).
const TXT_PREFIX: &str = "_mta-sts.";

/// One `_mta-sts.<domain>` TXT answer.
struct TxtSeen {
    ts_us: i64,
    domain: String,
    /// The policy id, empty when the answer held no single valid `v=STSv1` record.
    id: String,
    /// The transaction's id in `dns.ndjson`.
    tx: String,
}

/// One TCP/443 connection that is, or may be, a policy fetch.
struct FetchSeen {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    first_us: i64,
    id: String,
    /// The policy domain from the SNI; None before (or without) a ClientHello.
    domain: Option<String>,
    /// None while the connection is open.
    outcome: Option<StsFetch>,
}

/// What one client did for MTA-STS recently.
#[derive(Default)]
struct ClientSts {
    last_us: i64,
    /// What this client's memory costs (its part of the window's bytes).
    bytes: usize,
    txt: Vec<TxtSeen>,
    /// (policy domain, its host's addresses, time)
    hosts: Vec<(String, Vec<IpAddr>, i64)>,
    fetches: Vec<FetchSeen>,
}

impl ClientSts {
    fn is_empty(&self) -> bool {
        self.txt.is_empty() && self.hosts.is_empty() && self.fetches.is_empty()
    }

    /// Bytes this memory costs: its slot and what its lists hold (at most 3 × [`PER_CLIENT`]
    /// entries, walked once per change of this client).
    fn weigh(&self) -> usize {
        const SLOT: usize = 32 + size_of::<IpAddr>() + size_of::<ClientSts>();
        let txt: usize = self
            .txt
            .iter()
            .map(|t| t.domain.len() + t.id.len() + t.tx.len())
            .sum();
        let hosts: usize = self
            .hosts
            .iter()
            .map(|(d, a, _)| d.len() + a.capacity() * size_of::<IpAddr>())
            .sum();
        let fetches: usize = self
            .fetches
            .iter()
            .map(|f| f.id.len() + f.domain.as_ref().map_or(0, String::len))
            .sum();
        SLOT + self.txt.capacity() * size_of::<TxtSeen>()
            + self.hosts.capacity() * size_of::<(String, Vec<IpAddr>, i64)>()
            + self.fetches.capacity() * size_of::<FetchSeen>()
            + txt
            + hosts
            + fetches
    }
}

/// Counters of one worker's MTA-STS memory (`summary.json` `mta_sts`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StsLinkStats {
    /// Policy-fetch connections that ended, by outcome: named `mta-sts.<domain>` in their
    /// ClientHello, or (without a ClientHello) made to an address the client had resolved for
    /// a policy host.
    pub fetches_ok: u64,
    /// Of them, reset.
    pub fetches_reset: u64,
    /// Of them, idle until the timeout or cut by the capture's end before completing.
    pub fetches_timeout: u64,
    /// Of them, whose handshake failed (an alert, non-TLS bytes, a close before data).
    pub fetches_handshake_failed: u64,
    /// TCP/443 connections that proved not to be policy fetches (another name in the
    /// ClientHello, none, not TLS, or no ClientHello to an address of no policy host).
    pub other_https_connections: u64,
    /// Sessions that got MTA-STS facts from this memory: a TXT answer or a fetch.
    pub sessions_linked: u64,
    /// Clients forgotten to stay within the count or the bytes.
    pub clients_evicted: u64,
    /// TXT answers, policy-host address sets and fetches dropped because a client had
    /// [`PER_CLIENT`] of that kind.
    pub entries_dropped: u64,
}

impl StsLinkStats {
    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &StsLinkStats) {
        self.fetches_ok += o.fetches_ok;
        self.fetches_reset += o.fetches_reset;
        self.fetches_timeout += o.fetches_timeout;
        self.fetches_handshake_failed += o.fetches_handshake_failed;
        self.other_https_connections += o.other_https_connections;
        self.sessions_linked += o.sessions_linked;
        self.clients_evicted += o.clients_evicted;
        self.entries_dropped += o.entries_dropped;
    }

    fn count_outcome(&mut self, outcome: StsFetch) {
        match outcome {
            StsFetch::Ok => self.fetches_ok += 1,
            StsFetch::Reset => self.fetches_reset += 1,
            StsFetch::Timeout => self.fetches_timeout += 1,
            StsFetch::HandshakeFailed => self.fetches_handshake_failed += 1,
            StsFetch::NotSeen => {}
        }
    }
}

/// Per-client MTA-STS memory of one worker.
pub struct StsLinker {
    window_us: i64,
    /// Policy fetches are followed (else `sts_fetch` stays None).
    pub follow_fetches: bool,
    clients: AHashMap<IpAddr, ClientSts>,
    /// Clients and their bytes (the `sts_clients` window).
    usage: Usage,
    /// The worker's share of the memory budget for this window.
    max_bytes: usize,
    /// Counters.
    pub stats: StsLinkStats,
}

/// Pushes into a bounded list, dropping the oldest.
fn push_bounded<T>(v: &mut Vec<T>, item: T, dropped: &mut u64) {
    if v.len() >= PER_CLIENT {
        v.remove(0);
        *dropped += 1;
    }
    v.push(item);
}

/// The id of an MTA-STS TXT record set (RFC 8461 §3.1): exactly one record starting with
/// `v=STSv1`, whose `id` field is 1 to 32 letters and digits; empty otherwise.
pub fn sts_id<'a>(records: impl Iterator<Item = &'a str>) -> String {
    let mut sts = records.filter(|r| r.starts_with("v=STSv1"));
    let (Some(record), None) = (sts.next(), sts.next()) else {
        return String::new();
    };
    let mut fields = record.split(';').map(str::trim);
    if fields.next() != Some("v=STSv1") {
        return String::new();
    }
    fields
        .find_map(|f| f.strip_prefix("id="))
        .filter(|id| (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map_or_else(String::new, str::to_string)
}

impl StsLinker {
    /// An empty memory; sessions link to activity at most `window_us` before them; at most
    /// `max_bytes` are held (the worker's share of the budget).
    pub fn new(window_us: i64, follow_fetches: bool, max_bytes: usize) -> StsLinker {
        StsLinker {
            window_us,
            follow_fetches,
            clients: AHashMap::new(),
            usage: Usage::default(),
            max_bytes,
            stats: StsLinkStats::default(),
        }
    }

    /// Size and evictions of this memory (the `sts_clients` window).
    pub fn usage(&self) -> Usage {
        Usage {
            evictions: self.stats.clients_evicted + self.stats.entries_dropped,
            ..self.usage
        }
    }

    /// Forgets the least recently active tenth of the clients (at least one).
    fn evict(&mut self) {
        self.stats.clients_evicted += evict_oldest_tenth(
            &mut self.clients,
            &mut self.usage,
            |c| c.last_us,
            |_, c| c.bytes,
            |_, _| {},
        );
    }

    /// The memory of `ip`, made (after evicting, when the count or the bytes are reached) if
    /// new. Call [`StsLinker::reweigh`] after changing it.
    fn client(&mut self, ip: IpAddr, ts_us: i64) -> &mut ClientSts {
        if !self.clients.contains_key(&ip)
            && (self.clients.len() >= MAX_CLIENTS || self.usage.bytes > self.max_bytes)
        {
            self.evict();
        }
        let usage = &mut self.usage;
        let c = self.clients.entry(ip).or_insert_with(|| {
            usage.entries += 1;
            ClientSts::default()
        });
        c.last_us = c.last_us.max(ts_us);
        c
    }

    /// Weighs `ip`'s memory again after a change, and forgets it when it holds nothing.
    fn reweigh(&mut self, ip: IpAddr) {
        let Some(c) = self.clients.get_mut(&ip) else {
            return;
        };
        if c.is_empty() {
            self.usage.entries -= 1;
            self.usage.bytes -= c.bytes;
            self.clients.remove(&ip);
            return;
        }
        let bytes = c.weigh();
        self.usage.bytes = self.usage.bytes - c.bytes + bytes;
        c.bytes = bytes;
    }

    /// Learns from a response the client received: a `_mta-sts` TXT answer, or addresses of a
    /// policy host.
    pub fn answer(&mut self, client: IpAddr, msg: &DnsMessage, ts_us: i64, tx: &str) {
        if msg.qtype == Some(RecordType::TXT)
            && let Some(domain) = msg.qname.strip_prefix(TXT_PREFIX)
        {
            let id = sts_id(
                msg.answers
                    .iter()
                    .filter(|a| a.rtype == "TXT" && a.name == msg.qname)
                    .map(|a| a.data.as_str()),
            );
            let seen = TxtSeen {
                ts_us,
                domain: domain.to_string(),
                id,
                tx: tx.to_string(),
            };
            let mut dropped = 0;
            push_bounded(&mut self.client(client, ts_us).txt, seen, &mut dropped);
            self.stats.entries_dropped += dropped;
            self.reweigh(client);
            return;
        }
        let mut hosts: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for (owner, addr) in &msg.addresses {
            let Some(domain) = owner.strip_prefix(POLICY_HOST_PREFIX) else {
                continue;
            };
            match hosts.iter().position(|(d, _)| d == domain) {
                Some(i) if hosts[i].1.len() < 32 => hosts[i].1.push(*addr),
                Some(_) => {}
                None if hosts.len() < 8 => hosts.push((domain.to_string(), vec![*addr])),
                None => {}
            }
        }
        if !hosts.is_empty() {
            let mut dropped = 0;
            let c = self.client(client, ts_us);
            for (domain, addrs) in hosts {
                push_bounded(&mut c.hosts, (domain, addrs, ts_us), &mut dropped);
            }
            self.stats.entries_dropped += dropped;
            self.reweigh(client);
        }
    }

    /// A TCP/443 connection opened: it may be a policy fetch (a reset or dropped SYN never
    /// shows a ClientHello; then the server address tells).
    pub fn fetch_opened(&mut self, client: (IpAddr, u16), server: (IpAddr, u16), first_us: i64) {
        let cid = community_id(6, client.0, client.1, server.0, server.1);
        let seen = FetchSeen {
            client,
            server,
            first_us,
            id: flow_id('F', &cid, first_us),
            domain: None,
            outcome: None,
        };
        let mut dropped = 0;
        push_bounded(
            &mut self.client(client.0, first_us).fetches,
            seen,
            &mut dropped,
        );
        self.stats.entries_dropped += dropped;
        self.reweigh(client.0);
    }

    /// The connection's ClientHello named its server, or it ended: updates (or, for a
    /// connection that is not a policy fetch, forgets) what was noted when it opened.
    pub fn fetch_update(
        &mut self,
        client: (IpAddr, u16),
        server: (IpAddr, u16),
        fetch: &PolicyFetch,
        end: Option<EndReason>,
    ) {
        let window_us = self.window_us;
        let Some(c) = self.clients.get_mut(&client.0) else {
            return;
        };
        let Some(i) = c
            .fetches
            .iter()
            .position(|f| f.client == client && f.server == server && f.first_us == fetch.first_us)
        else {
            return;
        };
        let kind = fetch.kind();
        match &kind {
            FetchKind::Other => {
                c.fetches.remove(i);
                self.stats.other_https_connections += 1;
                self.reweigh(client.0);
                return;
            }
            FetchKind::Policy(domain) => c.fetches[i].domain = Some(domain.clone()),
            FetchKind::Unknown => {}
        }
        let Some(end) = end else {
            self.reweigh(client.0);
            return;
        };
        let outcome = fetch.outcome(Some(end));
        // Without a ClientHello, only an address the client resolved for a policy host before
        // the connection makes it a fetch (`link`'s rule); addresses it learns later cannot.
        let first_us = fetch.first_us;
        let to_policy_host = c.hosts.iter().any(|(_, a, ts)| {
            *ts <= first_us && first_us.saturating_sub(*ts) <= window_us && a.contains(&server.0)
        });
        if kind == FetchKind::Unknown && !to_policy_host {
            c.fetches.remove(i);
            self.stats.other_https_connections += 1;
        } else {
            c.fetches[i].outcome = Some(outcome);
            self.stats.count_outcome(outcome);
        }
        self.reweigh(client.0);
    }

    /// Fills the session's MTA-STS fields from its client's activity for its recipient domain
    /// within the window before it: the last TXT answer (its transaction joins
    /// `dns_transaction_ids`), and every policy fetch (named by SNI, or, without a ClientHello,
    /// made to the address the client got last for `mta-sts.<domain>` before it).
    /// `sts_fetch` is the worst outcome (`not-seen` without a fetch); a fetch still open when
    /// the session started counts as `timeout`.
    pub fn link(&mut self, rec: &mut SessionRecord) {
        self.link_fields(rec);
        if rec.sts_txt.is_some() || !rec.sts_fetch_ids.is_empty() {
            self.stats.sessions_linked += 1;
        }
    }

    fn link_fields(&self, rec: &mut SessionRecord) {
        let Some(domain) = rec.recipient_domain.as_deref() else {
            return;
        };
        let since = rec.ts.0.saturating_sub(self.window_us);
        let in_window = |ts: i64| ts <= rec.ts.0 && ts >= since;
        let c = self.clients.get(&rec.client.ip);
        if self.follow_fetches {
            rec.sts_fetch = Some(StsFetch::NotSeen);
        }
        let Some(c) = c else {
            return;
        };
        if let Some(t) = c
            .txt
            .iter()
            .rev()
            .find(|t| t.domain == domain && in_window(t.ts_us))
        {
            rec.sts_txt = Some(t.id.clone());
            // The session waits for this record too, and carries its findings
            // (`mta-sts-txt-missing`) in `dns_finding_ids`.
            rec.dns_transaction_ids.push(t.tx.clone());
        }
        if !self.follow_fetches {
            return;
        }
        // Many domains' policy hosts share one address (hosted MTA-STS): a fetch without a
        // ClientHello belongs to the domain whose policy host the client resolved to that
        // address last before the fetch.
        let host_addresses = |ip: IpAddr, at: i64| {
            c.hosts
                .iter()
                .filter(|(_, a, ts)| *ts <= at && a.contains(&ip))
                .max_by_key(|(_, _, ts)| *ts)
                .is_some_and(|(d, _, ts)| d == domain && in_window(*ts))
        };
        let mut worst: Option<StsFetch> = None;
        for f in &c.fetches {
            let ours = match &f.domain {
                Some(d) => d == domain,
                None => host_addresses(f.server.0, f.first_us),
            };
            if !ours || !in_window(f.first_us) {
                continue;
            }
            let outcome = f.outcome.unwrap_or(StsFetch::Timeout);
            worst = Some(worst.map_or(outcome, |w| w.max(outcome)));
            rec.sts_fetch_ids.push(f.id.clone());
        }
        if let Some(w) = worst {
            rec.sts_fetch = Some(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AnswerText;
    use crate::tls::fetch::tests::client_hello;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    const SERVER: (IpAddr, u16) = (IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 44)), 443);

    /// A `_mta-sts.<domain>` TXT answer holding `v=STSv1; id=<id>`.
    fn txt(domain: &str, id: &str) -> DnsMessage {
        let qname = format!("_mta-sts.{domain}");
        DnsMessage {
            response: true,
            qtype: Some(RecordType::TXT),
            answers: vec![AnswerText {
                name: qname.clone(),
                rtype: "TXT",
                ttl: 300,
                data: format!("v=STSv1; id={id}"),
            }],
            qname,
            ..DnsMessage::default()
        }
    }

    /// An A answer giving `mta-sts.<domain>` the address `addr`.
    fn policy_host(domain: &str, addr: IpAddr) -> DnsMessage {
        DnsMessage {
            response: true,
            qtype: Some(RecordType::A),
            qname: format!("mta-sts.{domain}"),
            addresses: vec![(format!("mta-sts.{domain}"), addr)],
            ..DnsMessage::default()
        }
    }

    #[test]
    fn https_that_is_not_a_policy_fetch_leaves_nothing_behind() {
        let mut l = StsLinker::new(600_000_000, true, usize::MAX);
        // A ClientHello naming another host.
        let client = (ip(1), 40000);
        l.fetch_opened(client, SERVER, 1);
        assert_eq!(l.usage().entries, 1);
        assert!(l.usage().bytes > 0);
        let mut f = PolicyFetch::new(1);
        f.feed(true, &client_hello("www.example.org"));
        l.fetch_update(client, SERVER, &f, None);
        // A reset SYN to an address no policy host had.
        let other = (ip(2), 40001);
        l.fetch_opened(other, SERVER, 2);
        l.fetch_update(other, SERVER, &PolicyFetch::new(2), Some(EndReason::Reset));
        let u = l.usage();
        assert_eq!((u.entries, u.bytes), (0, 0), "nothing kept for them");
        assert_eq!(l.stats.other_https_connections, 2);
        assert_eq!(l.stats.fetches_reset, 0);
    }

    #[test]
    fn fetches_are_counted_by_outcome_when_they_end() {
        let mut l = StsLinker::new(600_000_000, true, usize::MAX);
        // Named by its SNI, reset after the hello.
        let a = (ip(1), 40000);
        l.fetch_opened(a, SERVER, 10);
        let mut f = PolicyFetch::new(10);
        f.feed(true, &client_hello("mta-sts.example.org"));
        l.fetch_update(a, SERVER, &f, None);
        l.fetch_update(a, SERVER, &f, Some(EndReason::Reset));
        // No ClientHello (a dropped SYN, idle), to the address the client got for the policy
        // host before: a fetch that timed out.
        let b = (ip(2), 40001);
        l.answer(b.0, &policy_host("example.net", SERVER.0), 20, "D1");
        l.fetch_opened(b, SERVER, 30);
        l.fetch_update(b, SERVER, &PolicyFetch::new(30), Some(EndReason::Timeout));
        // The server answered the hello with an alert.
        let c = (ip(3), 40002);
        l.fetch_opened(c, SERVER, 40);
        let mut f = PolicyFetch::new(40);
        f.feed(true, &client_hello("mta-sts.example.com"));
        f.feed(false, &[21, 3, 3, 0, 2, 2, 40]);
        l.fetch_update(c, SERVER, &f, Some(EndReason::Fin));
        let s = l.stats;
        assert_eq!(
            (
                s.fetches_ok,
                s.fetches_reset,
                s.fetches_timeout,
                s.fetches_handshake_failed
            ),
            (0, 1, 1, 1)
        );
        assert_eq!(s.other_https_connections, 0);
        assert_eq!(l.usage().entries, 3, "fetches wait to be linked");
    }

    #[test]
    fn the_byte_share_bounds_the_memory_and_evictions_are_counted() {
        let mut one = StsLinker::new(600_000_000, true, usize::MAX);
        one.answer(ip(0), &txt("example.org", "a1"), 0, "D0");
        let per_client = one.usage().bytes;
        // Room for about ten clients.
        let limit = per_client * 10;
        let mut l = StsLinker::new(600_000_000, true, limit);
        for i in 0..1000 {
            l.answer(ip(i), &txt("example.org", "a1"), i64::from(i), "D0");
            let u = l.usage();
            assert!(u.bytes <= limit + per_client, "{} > {limit}", u.bytes);
        }
        let u = l.usage();
        assert!(u.entries <= 11, "{}", u.entries);
        assert_eq!(u.evictions, l.stats.clients_evicted);
        assert_eq!(l.stats.clients_evicted as usize + u.entries, 1000);
        // The most recent client is still there.
        assert!(l.clients.contains_key(&ip(999)));
        assert!(!l.clients.contains_key(&ip(0)));
    }

    #[test]
    fn a_client_keeps_its_newest_entries_and_counts_the_dropped() {
        let mut l = StsLinker::new(600_000_000, true, usize::MAX);
        for i in 0..100 {
            l.answer(ip(1), &txt(&format!("d{i}.example"), "a1"), i, "D0");
        }
        assert_eq!(l.stats.entries_dropped, 100 - PER_CLIENT as u64);
        assert_eq!(l.usage().evictions, 100 - PER_CLIENT as u64);
        let c = &l.clients[&ip(1)];
        assert_eq!(c.txt.len(), PER_CLIENT);
        assert_eq!(c.txt[0].domain, "d36.example");
        assert_eq!(l.usage().bytes, c.weigh());
    }

    #[test]
    fn policy_ids_follow_rfc_8461() {
        assert_eq!(
            sts_id(["v=STSv1; id=20160831085700Z;"].into_iter()),
            "20160831085700Z"
        );
        assert_eq!(sts_id(["v=STSv1;id=abc"].into_iter()), "abc");
        assert_eq!(sts_id(["v=spf1 -all", "v=STSv1; id=x1"].into_iter()), "x1");
        assert_eq!(sts_id(["v=STSv1; id=a", "v=STSv1; id=b"].into_iter()), "");
        assert_eq!(sts_id(["v=STSv1; id=not-alnum"].into_iter()), "");
        assert_eq!(sts_id(["v=STSv1"].into_iter()), "");
        assert_eq!(sts_id(std::iter::empty()), "");
        assert_eq!(
            sts_id([&*format!("v=STSv1; id={}", "a".repeat(33))].into_iter()),
            ""
        );
    }
}
