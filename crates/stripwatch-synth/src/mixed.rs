//! The benchmark capture: many interleaved SMTP sessions plus background TCP, streamed to
//! disk in constant memory. Most deliveries on port 25 over IPv4 start, as an MTA's do, with
//! the MX lookup of the recipient domain and the address lookup of the MX host, so the DNS
//! path and the DNS/SMTP linkage carry their share of the load.
//!
//! 64 connections are open at any time. Each connection is generated whole when it starts
//! (a few hundred kilobytes at most) and its frames are merged into the file in time order
//! with the others'; when one ends, the next starts a few milliseconds later. Memory is
//! therefore bounded by 64 connections whatever the session count, and the output is a pure
//! function of the seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::fake_tls;
use super::link::{CLIENT_MAC, Link, SERVER_MAC};
use super::pcap_writer::{CaptureWriter, FileFormat, PacketWrite};
use super::prng::Prng;
use super::scenarios::START_US;
use super::smtp_dialog::{
    AfterStarttls, Body, Dialog, Greeting, Handshake, Mail, Upgrade, boring_message, play,
    repeat_to,
};
use super::tcp::{ConvConfig, Conversation, Endpoint, Frame, Side, Timing};
use super::{MixedStats, Profile, SynthError};

/// Connections open at once.
const CONCURRENT: usize = 64;
/// Distinct SMTP servers (each keeps one STARTTLS policy for the whole capture).
const SERVERS: u64 = 200;
/// Distinct client hosts.
const CLIENTS: u64 = 250;
/// Background (non-SMTP) connections per 1000 SMTP sessions.
const BACKGROUND_PER_MILLE: u64 = 250;
/// Port-25 IPv4 deliveries (per 1000) preceded by their MX and address lookups; the rest use
/// answers the client had cached.
const LOOKUPS_PER_MILLE: u64 = 700;
/// In the dense profile, port-25 IPv4 deliveries (per 1000) preceded by MX, A and TLSA lookups.
const DENSE_LOOKUPS_PER_MILLE: u64 = 900;
/// The certificate the dense profile's servers present in full TLS 1.2 handshakes (the
/// project's test root CA, 826 bytes of DER: parsed and judged like any other).
const SERVER_CERT: &[u8] = include_bytes!("../data/server-cert.der");
/// The resolver the clients ask.
const RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// One open connection: its frames and the next one to write.
struct Open {
    frames: Vec<Frame>,
    next: usize,
}

/// Decides and builds connections.
struct Mix {
    prng: Prng,
    next_port: u64,
    /// The session-dense profile: small messages, full handshakes, TLSA lookups, no background.
    dense: bool,
}

impl Mix {
    /// Endpoints for a connection to `server_port` on server `server` (IPv6 if `v6`).
    fn endpoints(&mut self, server: u64, server_port: u16, v6: bool) -> (Endpoint, Endpoint) {
        let client = self.prng.range(1, CLIENTS);
        let (c, s): (IpAddr, IpAddr) = if v6 {
            (
                Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, client as u16).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 0x5, 0, 0, 0, 0, server as u16).into(),
            )
        } else {
            (
                Ipv4Addr::new(192, 0, 2, client as u8).into(),
                Ipv4Addr::new(198, 51, 100, server as u8).into(),
            )
        };
        // Ports cycle through the ephemeral range; 64 open connections never collide.
        let port = 32_768 + (self.next_port % 28_232) as u16;
        self.next_port += 1;
        let mut cmac = CLIENT_MAC;
        cmac[5] = client as u8;
        let ttl_c = 64 - self.prng.range(0, 3) as u8;
        let ttl_s = [64u8, 128, 255][(server % 3) as usize] - (server % 17) as u8;
        (
            Endpoint {
                ip: c,
                port,
                mac: cmac,
                ttl: ttl_c,
            },
            Endpoint {
                ip: s,
                port: server_port,
                mac: SERVER_MAC,
                ttl: ttl_s,
            },
        )
    }

    /// A connection's clock: round trip between 2 and 200 ms, back-to-back frames ~wire speed.
    fn timing(&mut self) -> Timing {
        let rtt = self.prng.log_uniform(2_000, 200_000);
        Timing {
            burst_us: (8, 40),
            turn_us: (rtt / 2, rtt / 2 + rtt / 4 + 2_000),
        }
    }

    fn conversation(&mut self, start_us: u64, client: Endpoint, server: Endpoint) -> Conversation {
        let v6 = client.ip.is_ipv6();
        let cfg = ConvConfig {
            client,
            server,
            link: Link::Ethernet,
            mss: if v6 { 1440 } else { 1460 },
            isn: None,
            timing: self.timing(),
        };
        Conversation::new(cfg, start_us, Prng::new(self.prng.next_u64()))
    }

    /// A message of about `size` bytes: readable text when it will travel in cleartext,
    /// cheap filler when only its length matters (inside TLS).
    fn message(&mut self, size: usize, readable: bool) -> Vec<u8> {
        if readable {
            boring_message(
                &mut self.prng,
                "sender@example.org",
                "rcpt@example.net",
                size / 64 + 1,
            )
        } else {
            let line =
                b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n";
            repeat_to(line, size.max(2))
        }
    }

    /// Message size: mostly small, a long tail up to 256 KB (dense: 300 B to 3 kB).
    fn message_size(&mut self) -> usize {
        if self.dense {
            self.prng.log_uniform(300, 3_000) as usize
        } else if self.prng.chance(20) {
            self.prng.log_uniform(65_536, 262_144) as usize
        } else {
            self.prng.log_uniform(400, 40_000) as usize
        }
    }

    /// One SMTP session starting at `start_us`.
    fn smtp(&mut self, start_us: u64) -> Vec<Frame> {
        let server = self.prng.range(1, SERVERS);
        // A stable per-server policy: about 85% of servers offer STARTTLS.
        let offers = Prng::new(server ^ 0x5eed).chance(850);
        let v6 = self.prng.chance(100);
        let port = match (self.dense, self.prng.range(0, 99)) {
            (false, 0..=5) | (true, 0..=1) => 587,
            (false, 6..=9) | (true, 2..=3) => 465,
            _ => 25,
        };
        let server_name = format!("mx{server}.example.net");
        let mut d = Dialog::new(
            &server_name,
            &format!("out{}.example.org", self.prng.range(1, 99)),
        );
        d.capabilities = Dialog::postfix_capabilities(offers);
        d.pipelining = self.prng.chance(500);
        if self.dense {
            d.handshake = match self.prng.range(0, 9) {
                0..=6 => Handshake::Full(SERVER_CERT),
                7..=8 => Handshake::Tls13,
                _ => Handshake::Resume,
            };
        }
        let roll = self.prng.range(0, 999);
        let mut tls = true;
        if port == 465 {
            d.upgrade = Upgrade::Implicit;
        } else if !offers {
            d.upgrade = Upgrade::None;
            tls = false;
        } else {
            match roll {
                0..=799 => {}
                800..=879 => {
                    d.upgrade = Upgrade::None;
                    tls = false;
                }
                880..=899 => {
                    d = d.overwrite_capability("STARTTLS", "XXXXXXXA");
                    d.banner = Some(format!("220 {}", "*".repeat(30)));
                    d.upgrade = Upgrade::None;
                    tls = false;
                }
                900..=914 => {
                    d.capabilities.retain(|c| c != "STARTTLS");
                    d.upgrade = Upgrade::None;
                    tls = false;
                }
                915..=934 => {
                    d.upgrade = Upgrade::Starttls {
                        reply: "454 4.7.0 TLS not available due to local problem".into(),
                        pipelined: None,
                        then: AfterStarttls::Continue,
                    };
                    tls = false;
                }
                935..=949 => {
                    let then = if roll.is_multiple_of(2) {
                        AfterStarttls::ServerReset
                    } else {
                        AfterStarttls::ServerAlert
                    };
                    d.upgrade = Upgrade::Starttls {
                        reply: "220 2.0.0 Ready to start TLS".into(),
                        pipelined: None,
                        then,
                    };
                    tls = false;
                }
                950..=959 => {
                    d.upgrade = Upgrade::Starttls {
                        reply: "220 2.0.0 Ready to start TLS".into(),
                        pipelined: Some("RSET".into()),
                        then: AfterStarttls::Tls,
                    };
                }
                960..=979 => {
                    d.greeting = Greeting::Helo;
                    d.upgrade = Upgrade::None;
                    tls = false;
                }
                _ => {}
            }
        }
        let mails = if self.dense || self.prng.chance(900) {
            1
        } else {
            self.prng.range(0, 3)
        };
        for _ in 0..mails {
            let size = self.message_size();
            let bdat = !tls && self.prng.chance(100);
            let body = self.message(size, !tls);
            let rcpts = self.prng.range(1, 3);
            d.mails.push(Mail {
                from: format!("user{}@example.org", self.prng.range(1, 9999)),
                to: (0..rcpts)
                    .map(|i| format!("rcpt{i}@{server_name}"))
                    .collect(),
                body: if bdat {
                    Body::Bdat(body)
                } else {
                    Body::Data(body)
                },
            });
        }
        let (c, s) = self.endpoints(server, port, v6);
        let mut frames = Vec::new();
        let mut start_us = start_us;
        let lookups = if self.dense {
            DENSE_LOOKUPS_PER_MILLE
        } else {
            LOOKUPS_PER_MILLE
        };
        if let (IpAddr::V4(client), IpAddr::V4(addr), 25) = (c.ip, s.ip, port)
            && self.prng.chance(lookups)
        {
            let domain = format!("d{server}.example");
            start_us = self.lookups(&mut frames, start_us, client, &domain, &server_name, addr);
        }
        let mut conv = self.conversation(start_us, c, s);
        conv.handshake();
        let actions = d.actions(&mut self.prng);
        play(&mut conv, &actions, &[]);
        frames.extend(conv.into_frames());
        frames
    }

    /// The MX lookup of `domain` (answered with `mx`) and the A lookup of `mx` (answered with
    /// `addr`), from `client` to the resolver; in the dense profile also the TLSA lookup of
    /// `_25._tcp.mx` (answered with no record, as for most domains). Returns when the client
    /// can connect.
    fn lookups(
        &mut self,
        frames: &mut Vec<Frame>,
        start_us: u64,
        client: Ipv4Addr,
        domain: &str,
        mx: &str,
        addr: Ipv4Addr,
    ) -> u64 {
        use super::dns::{Rdata, query, response, udp_frame};
        let mut t = start_us;
        let c = (
            IpAddr::V4(client),
            30_000 + self.prng.range(0, 30_000) as u16,
        );
        let r = (IpAddr::V4(RESOLVER), 53);
        let tlsa = format!("_25._tcp.{mx}");
        let mut exchanges: Vec<(&str, u16, Option<Rdata<'_>>)> = vec![
            (domain, 15, Some(Rdata::Mx(10, mx))),
            (mx, 1, Some(Rdata::A(addr))),
        ];
        if self.dense {
            exchanges.push((&tlsa, 52, None));
        }
        for (name, qtype, answer) in exchanges {
            let id = self.prng.range(1, 65_000) as u16;
            let answers: Vec<_> = answer.into_iter().map(|a| (name, 300, a)).collect();
            let data = response(id, name, qtype, &answers);
            frames.push(Frame {
                ts_us: t,
                side: Side::Client,
                data: udp_frame(c, r, 64, id, &query(id, name, qtype)),
            });
            t += self.prng.range(500, 30_000);
            frames.push(Frame {
                ts_us: t,
                side: Side::Server,
                data: udp_frame(r, c, 62, id ^ 0x5a5a, &data),
            });
            t += self.prng.range(100, 2_000);
        }
        t
    }

    /// One non-SMTP connection: HTTPS or plain HTTP to a web server.
    fn background(&mut self, start_us: u64) -> Vec<Frame> {
        let server = self.prng.range(201, 250);
        let https = self.prng.chance(700);
        let v6 = self.prng.chance(150);
        let (c, s) = self.endpoints(server, if https { 443 } else { 80 }, v6);
        let mut conv = self.conversation(start_us, c, s);
        conv.handshake();
        let response = self.prng.log_uniform(300, 120_000) as usize;
        if https {
            let mut sid = [0u8; 32];
            self.prng.fill(&mut sid);
            conv.send(
                Side::Client,
                &fake_tls::client_hello(&mut self.prng, "www.example.com", &sid),
            );
            conv.send(
                Side::Server,
                &fake_tls::server_resume_flight(&mut self.prng, &sid),
            );
            conv.send(
                Side::Client,
                &fake_tls::change_cipher_spec_and_finished(&mut self.prng),
            );
            let request = self.prng.range(300, 900) as usize;
            conv.send(
                Side::Client,
                &fake_tls::application_data(&mut self.prng, request),
            );
            conv.send(
                Side::Server,
                &fake_tls::application_data(&mut self.prng, response),
            );
        } else {
            conv.send(Side::Client, b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: synth\r\nAccept: */*\r\n\r\n");
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {response}\r\n\r\n"
            )
            .into_bytes();
            reply.extend_from_slice(&repeat_to(
                b"<html><body>synthetic page</body></html>\n",
                response,
            ));
            conv.send(Side::Server, &reply);
        }
        conv.close(Side::Client);
        conv.into_frames()
    }
}

/// Writes the benchmark capture (see [`super::write_mixed`]).
pub fn write(
    path: &Path,
    sessions: u64,
    seed: u64,
    profile: Profile,
) -> Result<MixedStats, SynthError> {
    let io = |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let format = FileFormat::from_path(path);
    let mut file = CaptureWriter::create(path, format, Link::Ethernet.linktype()).map_err(io)?;
    let mut stats = MixedStats {
        packets: 0,
        bytes: 0,
        sessions: 0,
    };
    let mut mix = Mix {
        prng: Prng::new(seed),
        next_port: seed % 28_232,
        dense: profile == Profile::Dense,
    };
    let mut slots: Vec<Option<Open>> = (0..CONCURRENT).map(|_| None).collect();
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut serial = 0u64;
    let mut background_budget = 0u64;

    // Starts the next connection in `slot` at `at` and returns its first frame's time;
    // `None` once every SMTP session has started.
    let mut start =
        |mix: &mut Mix, slot: &mut Option<Open>, at: u64, stats: &mut MixedStats| -> Option<u64> {
            if stats.sessions >= sessions {
                return None;
            }
            // Background connections are interleaved at BACKGROUND_PER_MILLE per SMTP session.
            let frames = if !mix.dense && background_budget >= 1000 && mix.prng.chance(500) {
                background_budget -= 1000;
                mix.background(at)
            } else {
                background_budget += BACKGROUND_PER_MILLE;
                stats.sessions += 1;
                mix.smtp(at)
            };
            let ts = frames.first().map(|f| f.ts_us).unwrap_or(at);
            *slot = Some(Open { frames, next: 0 });
            Some(ts)
        };

    for (i, slot) in slots.iter_mut().enumerate() {
        let at = START_US + i as u64 * mix.prng.range(1_000, 30_000);
        if let Some(ts) = start(&mut mix, slot, at, &mut stats) {
            heap.push(Reverse((ts, serial, i)));
            serial += 1;
        }
    }
    while let Some(Reverse((ts, _, i))) = heap.pop() {
        let open = slots[i].as_mut().expect("a queued slot is open");
        let frame = &open.frames[open.next];
        file.write_packet(frame.ts_us, &frame.data).map_err(io)?;
        stats.packets += 1;
        open.next += 1;
        let next_ts = if open.next < open.frames.len() {
            Some(open.frames[open.next].ts_us)
        } else {
            slots[i] = None;
            let at = ts + mix.prng.range(100, 5_000);
            start(&mut mix, &mut slots[i], at, &mut stats)
        };
        if let Some(t) = next_ts {
            heap.push(Reverse((t, serial, i)));
            serial += 1;
        }
    }
    file.finish().map_err(io)?;
    stats.bytes = std::fs::metadata(path).map_err(io)?.len();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::read_back;
    use etherparse::{SlicedPacket, TransportSlice};
    use std::collections::{HashMap, HashSet};

    #[test]
    fn synth_mixed_is_deterministic_ordered_and_interleaved() {
        let dir =
            std::env::temp_dir().join(format!("stripwatch-mixed-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.pcap");
        let b = dir.join("b.pcap");
        let sa = write(&a, 300, 42, Profile::Mixed).unwrap();
        let sb = write(&b, 300, 42, Profile::Mixed).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());
        assert_eq!(
            (sa.packets, sa.bytes, sa.sessions),
            (sb.packets, sb.bytes, sb.sessions)
        );
        assert_eq!(sa.sessions, 300);
        assert_eq!(sa.bytes, bytes.len() as u64);

        let (linktype, packets) = read_back(&bytes);
        assert_eq!(linktype, 1);
        assert_eq!(packets.len() as u64, sa.packets);
        assert!(packets.windows(2).all(|w| w[0].0 <= w[1].0));

        // Count SYNs to port 25/587/465 (SMTP sessions) and find the peak of open connections.
        let mut smtp_syns = 0;
        let mut other_syns = 0;
        let mut open: HashSet<(u16, u16)> = HashSet::new();
        let mut peak = 0;
        let mut next_seq: HashMap<(u16, u16, bool), u32> = HashMap::new();
        let mut dns = 0;
        for (_, frame) in &packets {
            let p = SlicedPacket::from_ethernet(frame).unwrap();
            let t = match p.transport {
                Some(TransportSlice::Tcp(t)) => t,
                Some(TransportSlice::Udp(u)) => {
                    assert!(u.source_port() == 53 || u.destination_port() == 53);
                    dns += 1;
                    continue;
                }
                _ => panic!("only TCP and DNS over UDP"),
            };
            let (sp, dp) = (t.source_port(), t.destination_port());
            let from_client = sp >= 32_768;
            let key = if from_client { (sp, dp) } else { (dp, sp) };
            if t.syn() && !t.ack() {
                if [25, 587, 465].contains(&dp) {
                    smtp_syns += 1
                } else {
                    other_syns += 1
                }
                open.insert(key);
                peak = peak.max(open.len());
            }
            if t.fin() && !from_client || t.rst() {
                open.remove(&key);
            }
            // Data never jumps ahead of what this direction has sent before.
            let len = t.payload().len() as u32 + u32::from(t.syn()) + u32::from(t.fin());
            if let Some(&expect) = next_seq.get(&(key.0, key.1, from_client))
                && !t.syn()
            {
                assert_eq!(t.sequence_number(), expect);
            }
            next_seq.insert(
                (key.0, key.1, from_client),
                t.sequence_number().wrapping_add(len),
            );
        }
        assert_eq!(smtp_syns, 300);
        // Most port-25 deliveries start with two lookups (four datagrams).
        assert!(dns > 300 && dns % 4 == 0, "dns datagrams: {dns}");
        assert!(other_syns > 20, "background flows: {other_syns}");
        assert!(peak >= 60, "peak concurrency {peak}");

        let gz = dir.join("c.pcapng.zst");
        let sc = write(&gz, 20, 1, Profile::Mixed).unwrap();
        let (lt, pk) = read_back(&zstd::decode_all(&std::fs::read(&gz).unwrap()[..]).unwrap());
        assert_eq!((lt, pk.len() as u64), (1, sc.packets));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn synth_dense_has_the_shape_of_a_busy_mx() {
        let dir =
            std::env::temp_dir().join(format!("stripwatch-dense-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dense.pcap");
        let stats = write(&path, 400, 7, Profile::Dense).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, packets) = read_back(&bytes);
        assert_eq!(packets.len() as u64, stats.packets);

        let mut syns = 0u64;
        let mut port25 = 0u64;
        let mut tlsa_queries = 0u64;
        let (mut certificates, mut tls13) = (0u64, 0u64);
        for (_, frame) in &packets {
            let p = SlicedPacket::from_ethernet(frame).unwrap();
            match p.transport {
                Some(TransportSlice::Tcp(t)) => {
                    let (sp, dp) = (t.source_port(), t.destination_port());
                    assert!(sp >= 32_768 || dp >= 32_768, "only client-server SMTP");
                    assert!(
                        [25, 587, 465].contains(&sp.min(dp)),
                        "no background traffic"
                    );
                    if sp == 25 || dp == 25 {
                        port25 += 1;
                    }
                    if t.syn() && !t.ack() {
                        syns += 1;
                    }
                    let data = t.payload();
                    // A handshake record opening with a Certificate after ServerHello, or a
                    // ServerHello naming TLS 1.3 in supported_versions.
                    if data.len() > 6 && data[0] == 0x16 && data[5] == 2 {
                        if data.windows(4).any(|w| w == [0x0b, 0, 3, 0x40]) {
                            certificates += 1;
                        }
                        if data.windows(6).any(|w| w == [0, 0x2b, 0, 2, 3, 4]) {
                            tls13 += 1;
                        }
                    }
                }
                Some(TransportSlice::Udp(u)) => {
                    let d = u.payload();
                    // The query's type follows the name: TLSA is 52.
                    if u.destination_port() == 53 && d.ends_with(&[0, 52, 0, 1]) {
                        tlsa_queries += 1;
                    }
                }
                _ => panic!("only TCP and DNS over UDP"),
            }
        }
        assert_eq!(syns, 400);
        let per_session = stats.packets as f64 / 400.0;
        assert!(
            (24.0..=36.0).contains(&per_session),
            "packets/session {per_session}"
        );
        let bytes_per_session = stats.bytes / 400;
        assert!(
            (3_500..=7_500).contains(&bytes_per_session),
            "bytes/session {bytes_per_session}"
        );
        let share25 = port25 as f64 / stats.packets as f64;
        assert!((0.72..=0.88).contains(&share25), "port-25 share {share25}");
        assert!(tlsa_queries > 250, "TLSA lookups: {tlsa_queries}");
        assert!(certificates > 150, "full handshakes: {certificates}");
        assert!(tls13 > 30, "TLS 1.3 handshakes: {tls13}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
