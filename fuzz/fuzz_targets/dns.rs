//! DNS: `dns::message::parse` on arbitrary bytes, and the transaction tracker fed a sequence of
//! messages between one client and one server (queries and responses, duplicated and
//! conflicting, at varying IP TTLs), then asked to close everything, each closed transaction
//! judged (`detect::dns_injection`); the written records go
//! through the cross-client DNS judge (MX sets, DNSSEC history) twice, as if from two clients.
//! Nothing may panic, and every record written must serialise. When the input's length is odd
//! the tracker has room for only 8 transactions of each kind and a few kB, so that making room
//! (the oldest tenth forgotten or closed early) runs all the time, and the bounds must hold.
//!
//! Input layout: a sequence of [flags, len_hi, len_lo, bytes...]; flags bit 0 = sent by the
//! server (else the client), bits 1-3 = milliseconds to advance the clock, bits 4-7 pick the
//! IP TTL (64 minus that).

#![no_main]

use libfuzzer_sys::fuzz_target;
use stripwatch::detect::dns_injection::judge_transaction;
use stripwatch::detect::dns_judge::{DnsJudge, DnsJudgeConfig, KnownMx};
use stripwatch::dns::{DnsConfig, DnsPacket, DnsTracker, message};
use stripwatch::state::NoBaseline;

fuzz_target!(|data: &[u8]| {
    let _ = message::parse(data);
    let client = ("192.0.2.1".parse().unwrap(), 53_000u16);
    let server = ("192.0.2.53".parse().unwrap(), 53u16);
    let tight = data.len() % 2 == 1;
    let cfg = if tight {
        DnsConfig {
            max_pending: 8,
            max_pending_bytes: 8 * 1024,
            max_clients: 2,
            ..DnsConfig::default()
        }
    } else {
        DnsConfig::default()
    };
    let mut tracker = DnsTracker::new(cfg, "fuzz".into());
    let mut closed = Vec::new();
    let mut ts = 1_700_000_000_000_000i64;
    let mut rest = data;
    while rest.len() >= 3 {
        let flags = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let body = &rest[3..];
        let msg = &body[..len.min(body.len())];
        rest = &body[msg.len()..];
        ts += i64::from((flags >> 1) & 7) * 1000;
        let (src, dst) = if flags & 1 == 1 { (server, client) } else { (client, server) };
        let ip_ttl = 64 - (flags >> 4);
        let pkt = DnsPacket { ts_us: ts, src, dst, ip_ttl, transport: "udp" };
        tracker.payload(pkt, msg, &mut closed);
        if tight {
            // At most one over each count between calls (the one just added), and within bytes
            // but for that one.
            let usage = tracker.pending_usage();
            assert!(usage.entries <= 2 * 8 + 2, "{usage:?}");
        }
        if let Some(m) = message::parse(msg) {
            let _ = m.answer_set();
        }
    }
    tracker.expire(ts + 60_000_000, true, &mut closed);
    // As the pipeline's worker does: judge each closed transaction, keep the ones worth writing.
    let mut out: Vec<_> = closed
        .into_iter()
        .filter_map(|t| tracker.keep(judge_transaction(t)))
        .collect();
    let known = KnownMx::parse("example.com mx.example.com").unwrap_or_default();
    let mut judge = DnsJudge::new(DnsJudgeConfig::default(), known);
    let mut judged = Vec::new();
    for other_client in [false, true] {
        for rec in &out {
            let mut r = rec.clone();
            if other_client {
                r.client.ip = "192.0.2.2".parse().unwrap();
            }
            judge.judge(&mut r, &NoBaseline);
            judged.push(r);
        }
    }
    out.extend(judged);
    for rec in &out {
        let _ = serde_json::to_string(rec).unwrap();
        for f in &rec.finding_details {
            let _ = serde_json::to_string(f).unwrap();
        }
    }
});
