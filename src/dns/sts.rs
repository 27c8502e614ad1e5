//! The MTA-STS side of the session linker (RFC 8461): per client, the `_mta-sts.<domain>` TXT
//! answers it received, the addresses it got for policy hosts `mta-sts.<domain>`, and its
//! policy-fetch connections on TCP/443 with how they ended. [`StsLinker::link`] ties a session
//! to what its client did for the session's recipient domain before the session, the way
//! `DnsTracker::link` ties it to the MX, address and TLSA lookups.
//!
//! Every map is bounded: [`MAX_CLIENTS`] clients (the least recently active tenth goes when
//! full) and [`PER_CLIENT`] entries of each kind per client (the oldest goes).

use super::message::DnsMessage;
use crate::record::{EndReason, SessionRecord, StsFetch};
use crate::tls::fetch::{FetchKind, POLICY_HOST_PREFIX, PolicyFetch};
use crate::util::{community_id, flow_id};
use ahash::AHashMap;
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
    txt: Vec<TxtSeen>,
    /// (policy domain, its host's addresses, time)
    hosts: Vec<(String, Vec<IpAddr>, i64)>,
    fetches: Vec<FetchSeen>,
}

/// Per-client MTA-STS memory of one worker.
pub struct StsLinker {
    window_us: i64,
    /// Policy fetches are followed (else `sts_fetch` stays None).
    pub follow_fetches: bool,
    clients: AHashMap<IpAddr, ClientSts>,
}

/// Pushes into a bounded list, dropping the oldest.
fn push_bounded<T>(v: &mut Vec<T>, item: T) {
    if v.len() >= PER_CLIENT {
        v.remove(0);
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
    /// An empty memory; sessions link to activity at most `window_us` before them.
    pub fn new(window_us: i64, follow_fetches: bool) -> StsLinker {
        StsLinker {
            window_us,
            follow_fetches,
            clients: AHashMap::new(),
        }
    }

    fn client(&mut self, ip: IpAddr, ts_us: i64) -> &mut ClientSts {
        if !self.clients.contains_key(&ip) && self.clients.len() >= MAX_CLIENTS {
            let mut ages: Vec<i64> = self.clients.values().map(|c| c.last_us).collect();
            let (_, pivot, _) = ages.select_nth_unstable(MAX_CLIENTS / 10);
            let pivot = *pivot;
            self.clients.retain(|_, c| c.last_us > pivot);
        }
        let c = self.clients.entry(ip).or_default();
        c.last_us = c.last_us.max(ts_us);
        c
    }

    /// Learns from a response the client received: a `_mta-sts` TXT answer, or addresses of a
    /// policy host.
    pub fn answer(&mut self, client: IpAddr, msg: &DnsMessage, ts_us: i64, tx: &str) {
        if msg.qtype == "TXT"
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
            push_bounded(&mut self.client(client, ts_us).txt, seen);
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
            let c = self.client(client, ts_us);
            for (domain, addrs) in hosts {
                push_bounded(&mut c.hosts, (domain, addrs, ts_us));
            }
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
        push_bounded(&mut self.client(client.0, first_us).fetches, seen);
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
        match fetch.kind() {
            FetchKind::Other => {
                c.fetches.remove(i);
                return;
            }
            FetchKind::Policy(domain) => c.fetches[i].domain = Some(domain),
            FetchKind::Unknown => {}
        }
        if end.is_some() {
            c.fetches[i].outcome = Some(fetch.outcome(end));
        }
    }

    /// Fills the session's MTA-STS fields from its client's activity for its recipient domain
    /// within the window before it: the last TXT answer (its transaction joins
    /// `dns_transaction_ids`), and every policy fetch (named by SNI, or, without a ClientHello,
    /// made to the address the client got last for `mta-sts.<domain>` before it).
    /// `sts_fetch` is the worst outcome (`not-seen` without a fetch); a fetch still open when
    /// the session started counts as `timeout`.
    pub fn link(&self, rec: &mut SessionRecord) {
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
    use super::sts_id;

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
