//! The labelled scenario captures: one small capture per situation the analyzer must judge,
//! each with the results a correct analyzer reports for it.
//!
//! A scenario is a list of SMTP sessions ([`Session`]: a [`Dialog`], TCP irregularities, how
//! much of it the capture keeps, and the findings the rules give) played one after the other
//! on one capture, at least a second apart. Each scenario has its own fixed random seed
//! (robustness variants share the seed of the session they vary), so its bytes never change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::SynthError;
use super::dns::{self, Rdata};
use super::expected::{Expected, ExpectedSession};
use super::link::{CLIENT_MAC, Link, SERVER_MAC};
use super::pcap_writer::{CaptureWriter, Compression, Container, FileFormat, PacketWrite};
use super::prng::Prng;
use super::smtp_dialog::{
    Action, AfterStarttls, Body, Dialog, Greeting, Mail, Step, Upgrade, boring_message,
    default_banner, play,
};
use super::tcp::{ConvConfig, Conversation, Endpoint, Frame, SendPlan, Side, Timing};

/// 2026-03-02T10:00:00Z, where every scenario capture starts (microseconds).
pub const START_US: u64 = 1_772_445_600 * 1_000_000;

const MX: &str = "mx.example.net";
const CLIENT: &str = "mail.example.org";

/// Finding kinds, spelled once.
const STRIPPED: &str = "starttls-stripped";
const NOT_SUPPORTED: &str = "starttls-not-supported";
const MISSING: &str = "starttls-missing";
const REJECTED: &str = "starttls-command-rejected";
const UNLISTED: &str = "smtp-to-unlisted-ip";
const HANDSHAKE_FAILED: &str = "tls-handshake-failed";
const CLEARTEXT_AFTER: &str = "cleartext-after-starttls";
const BY_CLIENT: &str = "plaintext-by-client";
const FALLBACK: &str = "plaintext-fallback";
const OVERLAP: &str = "tcp-overlap-conflict";
const INJECTED: &str = "injected-segment";

/// One scenario: its file stem, what it shows, how it is written, and how it is built.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// File stem and the name `stripwatch-synth scenarios --scenario` knows it by.
    pub name: &'static str,
    /// One or two sentences for the expected-results file.
    pub description: &'static str,
    /// Container and compression.
    pub format: FileFormat,
    /// Framing of every packet.
    pub link: Link,
    /// IPv6 addresses instead of IPv4.
    pub ipv6: bool,
    /// Name whose hash seeds the random stream (shared by variants of one session).
    seed: &'static str,
    /// Plays the sessions.
    build: fn(&mut Capture),
}

impl Scenario {
    fn new(name: &'static str, description: &'static str, build: fn(&mut Capture)) -> Scenario {
        Scenario {
            name,
            description,
            format: FileFormat::PCAP,
            link: Link::Ethernet,
            ipv6: false,
            seed: name,
            build,
        }
    }

    /// A variant that must give exactly the results of `base` (same seed, same sessions).
    fn variant_of(base: &Scenario, name: &'static str, description: &'static str) -> Scenario {
        Scenario {
            name,
            description,
            ..*base
        }
    }

    fn link(mut self, link: Link) -> Scenario {
        self.link = link;
        self
    }

    fn ipv6(mut self) -> Scenario {
        self.ipv6 = true;
        self
    }

    fn format(mut self, container: Container, compression: Compression) -> Scenario {
        self.format = FileFormat {
            container,
            compression,
        };
        self
    }

    fn build(mut self, build: fn(&mut Capture)) -> Scenario {
        self.build = build;
        self
    }

    /// The capture's file name (`NAME.pcap`, `NAME.pcapng`, `NAME.pcap.gz`, ...).
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.format.extension())
    }

    /// Plays the scenario: the frames in capture order and the expected results.
    pub fn render(&self) -> (Vec<Frame>, Expected) {
        let mut cap = Capture {
            link: self.link,
            ipv6: self.ipv6,
            prng: Prng::from_name(self.seed),
            clock_us: START_US,
            frames: Vec::new(),
            sessions: Vec::new(),
            other_findings: Vec::new(),
        };
        (self.build)(&mut cap);
        let mut expected = Expected::new(self.description, cap.sessions);
        for kind in cap.other_findings {
            *expected.finding_counts.entry(kind).or_insert(0) += 1;
        }
        (cap.frames, expected)
    }

    /// Writes the capture and `NAME.expected.json` into `dir`; returns the capture's path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, SynthError> {
        let (frames, expected) = self.render();
        let path = dir.join(self.file_name());
        let io = |source| SynthError::Io {
            path: path.clone(),
            source,
        };
        let mut file =
            CaptureWriter::create(&path, self.format, self.link.linktype()).map_err(io)?;
        for f in &frames {
            file.write_packet(f.ts_us, &f.data).map_err(io)?;
        }
        file.finish().map_err(io)?;
        let json_path = dir.join(format!("{}.expected.json", self.name));
        let json = expected.to_json().map_err(|source| SynthError::Json {
            name: self.name.to_string(),
            source,
        })?;
        std::fs::write(&json_path, json).map_err(|source| SynthError::Io {
            path: json_path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// How much of a session the capture keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Everything.
    All,
    /// Only what the client sent (an asymmetric-routing tap).
    ClientOnly,
    /// Everything from the first send of this step on (the capture started mid-stream).
    FromStep(Step),
}

/// One SMTP session of a scenario.
struct Session {
    /// Client host number (last address byte).
    client: u8,
    /// Server host number.
    server: u8,
    /// Server port.
    port: u16,
    dialog: Dialog,
    plans: Vec<(Step, SendPlan)>,
    isn: Option<(u32, u32)>,
    keep: Keep,
    /// Findings the rules give this session (a kind repeated counts twice).
    findings: Vec<&'static str>,
    /// Idle seconds before this session starts (after the previous one ended).
    gap_s: u64,
    /// The recipient domain and MX host the analyzer must link the session to.
    linked: Option<(&'static str, &'static str)>,
}

impl Session {
    fn new(dialog: Dialog, findings: &[&'static str]) -> Session {
        Session {
            client: 10,
            server: 25,
            port: 25,
            dialog,
            plans: Vec::new(),
            isn: None,
            keep: Keep::All,
            findings: findings.to_vec(),
            gap_s: 1,
            linked: None,
        }
    }

    fn plan(mut self, step: Step, plan: SendPlan) -> Session {
        self.plans.push((step, plan));
        self
    }
}

/// A scenario capture being built.
pub struct Capture {
    link: Link,
    ipv6: bool,
    prng: Prng,
    clock_us: u64,
    frames: Vec<Frame>,
    sessions: Vec<ExpectedSession>,
    /// Findings outside any SMTP session (DNS), for `finding_counts`.
    other_findings: Vec<&'static str>,
}

/// One response to a scenario query: delay after the query (µs), IP TTL, answers.
type DnsResponse<'a> = (u64, u8, Vec<(&'a str, u32, Rdata<'a>)>);

/// The resolver the scenario clients ask.
const RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

impl Capture {
    /// A DNS exchange over UDP between client `client` and the resolver: the query now, then
    /// each response `(delay µs, IP TTL, answers)` after its delay.
    fn dns(&mut self, client: u8, name: &str, qtype: u16, responses: &[DnsResponse<'_>]) {
        let id = self.prng.range(1, 65_000) as u16;
        let port = 50_000 + self.prng.range(0, 9_999) as u16;
        let c = (self.client_ip(client), port);
        let r = (IpAddr::V4(RESOLVER), 53);
        let t = if self.frames.is_empty() {
            self.clock_us
        } else {
            self.clock_us + 200_000
        };
        self.frames.push(Frame {
            ts_us: t,
            side: Side::Client,
            data: dns::udp_frame(c, r, 64, id, &dns::query(id, name, qtype)),
        });
        let mut last = t;
        for (i, (delay, ttl, answers)) in responses.iter().enumerate() {
            last = last.max(t + delay);
            self.frames.push(Frame {
                ts_us: t + delay,
                side: Side::Server,
                data: dns::udp_frame(
                    r,
                    c,
                    *ttl,
                    1000 + i as u16,
                    &dns::response(id, name, qtype, answers),
                ),
            });
        }
        self.frames.sort_by_key(|f| f.ts_us);
        self.clock_us = last + 1_000;
    }

    /// A DNSSEC-aware lookup over UDP (DO set), answered once after 15 ms with IP TTL 52;
    /// `signed` adds an RRSIG over the answers and sets AD, as a validating resolver does.
    fn dns_dnssec<'a>(
        &mut self,
        client: u8,
        name: &'a str,
        qtype: u16,
        mut answers: Vec<(&'a str, u32, Rdata<'a>)>,
        signed: bool,
    ) {
        let id = self.prng.range(1, 65_000) as u16;
        let port = 50_000 + self.prng.range(0, 9_999) as u16;
        let c = (self.client_ip(client), port);
        let r = (IpAddr::V4(RESOLVER), 53);
        let t = self.clock_us + 200_000;
        if signed {
            let owner = answers.first().map_or(name, |a| a.0);
            answers.push((owner, 3600, Rdata::Rrsig(qtype, "example.net")));
        }
        self.frames.push(Frame {
            ts_us: t,
            side: Side::Client,
            data: dns::udp_frame(c, r, 64, id, &dns::query_with(id, name, qtype, true)),
        });
        self.frames.push(Frame {
            ts_us: t + 15_000,
            side: Side::Server,
            data: dns::udp_frame(
                r,
                c,
                52,
                3000 + id % 1000,
                &dns::response_with(id, name, qtype, &answers, signed, true),
            ),
        });
        self.clock_us = t + 16_000;
    }

    /// The same MX lookup over TCP (length-prefixed messages), answered once.
    fn dns_tcp(
        &mut self,
        client: u8,
        name: &str,
        qtype: u16,
        answers: Vec<(&str, u32, Rdata<'_>)>,
    ) {
        let id = self.prng.range(1, 65_000) as u16;
        let start = self.clock_us + 200_000;
        let cfg = ConvConfig {
            client: Endpoint {
                ip: self.client_ip(client),
                port: 50_000 + self.prng.range(0, 9_999) as u16,
                mac: CLIENT_MAC,
                ttl: 64,
            },
            server: Endpoint {
                ip: IpAddr::V4(RESOLVER),
                port: 53,
                mac: SERVER_MAC,
                ttl: 60,
            },
            link: self.link,
            mss: 1460,
            isn: None,
            timing: Timing::SCENARIO,
        };
        let mut conv = Conversation::new(cfg, start, Prng::new(self.prng.next_u64()));
        conv.handshake();
        let framed = |m: Vec<u8>| {
            let mut v = (m.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(&m);
            v
        };
        conv.send(Side::Client, &framed(dns::query(id, name, qtype)));
        conv.send(
            Side::Server,
            &framed(dns::response(id, name, qtype, &answers)),
        );
        conv.close(Side::Client);
        self.clock_us = conv.clock_us();
        self.frames.extend(conv.into_frames());
    }

    fn client_ip(&self, n: u8) -> IpAddr {
        if self.ipv6 {
            Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, u16::from(n)).into()
        } else {
            Ipv4Addr::new(192, 0, 2, n).into()
        }
    }

    fn server_ip(&self, n: u8) -> IpAddr {
        if self.ipv6 {
            Ipv6Addr::new(0x2001, 0xdb8, 0x5, 0, 0, 0, 0, u16::from(n)).into()
        } else {
            Ipv4Addr::new(198, 51, 100, n).into()
        }
    }

    /// A one-recipient message with a dull body.
    fn mail(&mut self) -> Mail {
        let body = boring_message(&mut self.prng, "alice@example.org", "bob@example.net", 12);
        Mail {
            from: "alice@example.org".into(),
            to: vec!["bob@example.net".into()],
            body: Body::Data(body),
        }
    }

    /// Plays one session after the previous one and records what it should yield.
    fn run(&mut self, s: Session) {
        let start = if self.frames.is_empty() {
            self.clock_us
        } else {
            self.clock_us + s.gap_s * 1_000_000 + self.prng.range(0, 400_000)
        };
        let cfg = ConvConfig {
            client: Endpoint {
                ip: self.client_ip(s.client),
                port: 40_000 + self.prng.range(0, 19_999) as u16,
                mac: CLIENT_MAC,
                ttl: 64,
            },
            server: Endpoint {
                ip: self.server_ip(s.server),
                port: s.port,
                mac: SERVER_MAC,
                ttl: 52,
            },
            link: self.link,
            mss: if self.ipv6 { 1440 } else { 1460 },
            isn: s.isn,
            timing: Timing::SCENARIO,
        };
        let mut conv = Conversation::new(cfg, start, Prng::new(self.prng.next_u64()));
        conv.handshake();
        let actions = s.dialog.actions(&mut self.prng);
        let marks = play(&mut conv, &actions, &s.plans);
        self.clock_us = conv.clock_us();
        let mut frames = conv.into_frames();
        match s.keep {
            Keep::All => {}
            Keep::ClientOnly => frames.retain(|f| f.side == Side::Client),
            Keep::FromStep(step) => {
                let i = actions
                    .iter()
                    .position(|a| matches!(a, Action::Send(_, st, _) if *st == step))
                    .expect("the step to start from is in the dialog");
                frames.drain(..marks[i]);
            }
        }
        self.frames.extend(frames);
        let mut expected = match s.keep {
            Keep::All => ExpectedSession::complete(s.port, &s.dialog.facts(), &s.findings),
            Keep::ClientOnly => ExpectedSession::client_only(s.port, &s.dialog.facts()),
            Keep::FromStep(_) => ExpectedSession::incomplete(s.port),
        };
        if let Some((domain, host)) = s.linked {
            expected.recipient_domain = Some(domain);
            expected.mx_host = Some(host);
        }
        self.sessions.push(expected);
    }
}

// ---- dialogs ---------------------------------------------------------------------------

/// STARTTLS offered, used and completed; one mail inside TLS.
fn clean_dialog(cap: &mut Capture) -> Dialog {
    let mut d = Dialog::new(MX, CLIENT);
    d.mails = vec![cap.mail()];
    d
}

/// No upgrade; one mail in cleartext; `caps` as announced.
fn plaintext_dialog(cap: &mut Capture, caps: Vec<String>) -> Dialog {
    let mut d = Dialog::new(MX, CLIENT);
    d.capabilities = caps;
    d.upgrade = Upgrade::None;
    d.mails = vec![cap.mail()];
    d
}

/// STARTTLS offered and sent; `reply` and `then` decide the rest; no mail.
fn upgrade_dialog(reply: &str, then: AfterStarttls) -> Dialog {
    let mut d = Dialog::new(MX, CLIENT);
    d.upgrade = Upgrade::Starttls {
        reply: reply.to_string(),
        pipelined: None,
        then,
    };
    d
}

fn rejected_454() -> Dialog {
    upgrade_dialog(
        "454 4.7.0 TLS not available due to local problem",
        AfterStarttls::Continue,
    )
}

fn ready_then(then: AfterStarttls) -> Dialog {
    upgrade_dialog("220 2.0.0 Ready to start TLS", then)
}

/// Capabilities with the STARTTLS line overwritten in place by `token`.
fn caps_with(token: &str) -> Vec<String> {
    Dialog::postfix_capabilities(true)
        .into_iter()
        .map(|c| {
            if c == "STARTTLS" {
                token.to_string()
            } else {
                c
            }
        })
        .collect()
}

// ---- builders ----------------------------------------------------------------------------

fn clean_starttls(cap: &mut Capture) {
    let d = clean_dialog(cap);
    cap.run(Session::new(d, &[]));
}

fn clean_out_of_order(cap: &mut Capture) {
    let d = clean_dialog(cap);
    let ehlo = SendPlan {
        parts: Some(3),
        order: Some(vec![0, 2, 1]),
        ..SendPlan::default()
    };
    let hello = SendPlan {
        parts: Some(2),
        order: Some(vec![1, 0]),
        ..SendPlan::default()
    };
    cap.run(
        Session::new(d, &[])
            .plan(Step::GreetingReply, ehlo)
            .plan(Step::ClientHello, hello),
    );
}

fn clean_retransmit(cap: &mut Capture) {
    let d = clean_dialog(cap);
    let again = SendPlan {
        retransmit: vec![0],
        ..SendPlan::default()
    };
    let ehlo = SendPlan {
        parts: Some(2),
        retransmit: vec![0, 1],
        ..SendPlan::default()
    };
    cap.run(
        Session::new(d, &[])
            .plan(Step::Banner, again.clone())
            .plan(Step::GreetingReply, ehlo)
            .plan(Step::Starttls, again.clone())
            .plan(Step::ServerHello, again),
    );
}

fn clean_split_ehlo(cap: &mut Capture) {
    let d = clean_dialog(cap);
    cap.run(Session::new(d, &[]).plan(Step::GreetingReply, SendPlan::parts(3)));
}

fn clean_seq_wrap(cap: &mut Capture) {
    let d = clean_dialog(cap);
    // Client: 10 bytes before the wrap, inside "EHLO ...". Server: the banner, then 30 bytes
    // of the EHLO reply before the wrap.
    let banner_len = default_banner(MX).len() as u32 + 2;
    let isn_c = 0u32.wrapping_sub(1 + 10);
    let isn_s = 0u32.wrapping_sub(1 + banner_len + 30);
    let mut s = Session::new(d, &[]);
    s.isn = Some((isn_c, isn_s));
    cap.run(s);
}

fn clean_fragments(cap: &mut Capture) {
    let d = clean_dialog(cap);
    let frag = SendPlan {
        fragment: Some((0, 96)),
        ..SendPlan::default()
    };
    cap.run(Session::new(d, &[]).plan(Step::GreetingReply, frag));
}

fn plaintext_no_starttls(cap: &mut Capture) {
    let d = plaintext_dialog(cap, Dialog::postfix_capabilities(false));
    cap.run(Session::new(d, &[NOT_SUPPORTED]));
}

fn nonstandard_port_2525(cap: &mut Capture) {
    let d = plaintext_dialog(cap, Dialog::postfix_capabilities(false));
    let mut s = Session::new(d, &[NOT_SUPPORTED]);
    s.port = 2525;
    cap.run(s);
}

fn stripped_xxxxxxxa(cap: &mut Capture) {
    let mut d = plaintext_dialog(cap, caps_with("XXXXXXXA"));
    d.banner = Some(format!("220 {}", "*".repeat(30)));
    cap.run(Session::new(d, &[STRIPPED]));
}

fn stripped_xxxxxxxx(cap: &mut Capture) {
    let caps = [
        "PIPELINING",
        "SIZE 10240000",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "XXXXXXXX",
    ];
    let d = plaintext_dialog(cap, caps.iter().map(|c| c.to_string()).collect());
    cap.run(Session::new(d, &[STRIPPED]));
}

fn stripped_asterisks(cap: &mut Capture) {
    let d = plaintext_dialog(cap, caps_with("********"));
    cap.run(Session::new(d, &[STRIPPED]));
}

fn stripped_near_miss(cap: &mut Capture) {
    let d = plaintext_dialog(cap, caps_with("STARTTLX"));
    cap.run(Session::new(d, &[STRIPPED]));
}

fn stripped_near_miss_deletion(cap: &mut Capture) {
    let d = plaintext_dialog(cap, caps_with("STARTLS"));
    cap.run(Session::new(d, &[STRIPPED]));
}

/// The documented MX of example.net and its address (server host 25).
fn mx_answer() -> Vec<(&'static str, u32, Rdata<'static>)> {
    vec![("example.net", 3600, Rdata::Mx(10, "mx.example.net"))]
}

fn a_answer(host: &'static str, last: u8) -> Vec<(&'static str, u32, Rdata<'static>)> {
    vec![(host, 3600, Rdata::A(Ipv4Addr::new(198, 51, 100, last)))]
}

/// The client looks up `host`'s address (answered after `delay_us` with 198.51.100.`last`,
/// IP TTL 52) and delivers over STARTTLS to it; the session must be linked to example.net and
/// `host`.
fn resolve_and_deliver(cap: &mut Capture, client: u8, host: &'static str, last: u8, delay_us: u64) {
    cap.dns(client, host, 1, &[(delay_us, 52, a_answer(host, last))]);
    let mut s = Session::new(clean_dialog(cap), &[]);
    s.client = client;
    s.server = last;
    s.gap_s = 0;
    s.linked = Some(("example.net", host));
    cap.run(s);
}

fn dns_mx_linked(cap: &mut Capture) {
    cap.dns(10, "example.net", 15, &[(18_000, 52, mx_answer())]);
    resolve_and_deliver(cap, 10, "mx.example.net", 25, 12_000);
}

fn dns_injection(cap: &mut Capture) {
    // The forged answer (an injector two hops closer: IP TTL 60) beats the real one (52).
    let forged = vec![("example.net", 3600, Rdata::Mx(10, "mx.attacker.example"))];
    cap.dns(
        10,
        "example.net",
        15,
        &[(4_000, 60, forged), (31_000, 52, mx_answer())],
    );
    cap.other_findings.push("dns-injection");
    resolve_and_deliver(cap, 10, "mx.attacker.example", 66, 9_000);
}

fn dns_unlisted_ip(cap: &mut Capture) {
    cap.dns(10, "example.net", 15, &[(18_000, 52, mx_answer())]);
    cap.dns(
        10,
        "mx.example.net",
        1,
        &[(12_000, 52, a_answer("mx.example.net", 25))],
    );
    deliver_without_lookup(cap, 10, 99, &[UNLISTED]);
}

/// The client delivers over STARTTLS to server host `server` at once, without looking it up
/// first (its earlier lookups are the scenario's); `findings` are the session's expected ones.
fn deliver_without_lookup(cap: &mut Capture, client: u8, server: u8, findings: &[&'static str]) {
    let mut s = Session::new(clean_dialog(cap), findings);
    s.client = client;
    s.server = server;
    s.gap_s = 0;
    cap.run(s);
}

/// A busy client (one of its own, so that the captures analysed together do not share its
/// memory): after an earlier lookup of example.org's MX and its address, it resolves 300
/// other hosts within a minute (more than the 256 addresses a client's memory holds), then
/// example.net's MX and its address, and delivers there. A memory that refuses new names once
/// full loses the link, and example.org's answer, still remembered, would convict the session
/// of going to an unlisted address.
fn dns_busy_client(cap: &mut Capture) {
    let org_mx = vec![("example.org", 3600, Rdata::Mx(10, "mx.example.org"))];
    cap.dns(40, "example.org", 15, &[(18_000, 52, org_mx)]);
    cap.dns(
        40,
        "mx.example.org",
        1,
        &[(12_000, 52, a_answer("mx.example.org", 30))],
    );
    many_address_lookups(cap, 40);
    cap.dns(40, "example.net", 15, &[(18_000, 52, mx_answer())]);
    resolve_and_deliver(cap, 40, "mx.example.net", 25, 12_000);
}

/// 300 address lookups of other hosts from one client.
fn many_address_lookups(cap: &mut Capture, client: u8) {
    for i in 0..300u32 {
        let host = format!("host{i}.example.com");
        let addr = Ipv4Addr::new(203, 0, 113, (i % 250) as u8 + 1);
        let answer = vec![(host.as_str(), 300, Rdata::A(addr))];
        cap.dns(client, &host, 1, &[(2_000, 52, answer)]);
    }
}

/// The busy client's memory overflows between its lookup of mx.example.net and its delivery
/// there: the address is forgotten, while example.org's MX host, resolved again just before,
/// is remembered. What listed the server is gone, so nothing may be concluded: no
/// `smtp-to-unlisted-ip`, and no link either.
fn dns_busy_client_forgot_address(cap: &mut Capture) {
    cap.dns(41, "example.net", 15, &[(18_000, 52, mx_answer())]);
    cap.dns(
        41,
        "mx.example.net",
        1,
        &[(12_000, 52, a_answer("mx.example.net", 25))],
    );
    let org_mx = vec![("example.org", 3600, Rdata::Mx(10, "mx.example.org"))];
    cap.dns(41, "example.org", 15, &[(18_000, 52, org_mx)]);
    many_address_lookups(cap, 41);
    cap.dns(
        41,
        "mx.example.org",
        1,
        &[(12_000, 52, a_answer("mx.example.org", 30))],
    );
    deliver_without_lookup(cap, 41, 25, &[]);
}

/// The client looks up example.net's MX and address, then 64 other domains' MX and addresses
/// (a client keeps 64 MX answers), then delivers to mx.example.net: the MX answer that listed
/// the server was dropped, so the other 64, which do not list it, convict nothing.
fn dns_busy_client_forgot_mx(cap: &mut Capture) {
    cap.dns(42, "example.net", 15, &[(18_000, 52, mx_answer())]);
    cap.dns(
        42,
        "mx.example.net",
        1,
        &[(12_000, 52, a_answer("mx.example.net", 25))],
    );
    for i in 0..64u8 {
        let domain = format!("domain{i}.example");
        let host = format!("mx.domain{i}.example");
        let mx = vec![(domain.as_str(), 3600, Rdata::Mx(10, host.as_str()))];
        cap.dns(42, &domain, 15, &[(18_000, 52, mx)]);
        let a = vec![(
            host.as_str(),
            3600,
            Rdata::A(Ipv4Addr::new(203, 0, 113, i + 1)),
        )];
        cap.dns(42, &host, 1, &[(12_000, 52, a)]);
    }
    deliver_without_lookup(cap, 42, 25, &[]);
}

fn dns_tcp_mx(cap: &mut Capture) {
    cap.dns_tcp(10, "example.net", 15, mx_answer());
    resolve_and_deliver(cap, 10, "mx.example.net", 25, 12_000);
}

fn dns_mx_mismatch(cap: &mut Capture) {
    // Two clients get the documented answer; a third gets another set only (the injector
    // dropped the real answer) and follows it.
    cap.dns(10, "example.net", 15, &[(18_000, 52, mx_answer())]);
    cap.dns(12, "example.net", 15, &[(17_000, 52, mx_answer())]);
    let forged = vec![("example.net", 3600, Rdata::Mx(10, "mx.attacker.example"))];
    cap.dns(11, "example.net", 15, &[(4_000, 52, forged)]);
    cap.other_findings.push("mx-mismatch");
    resolve_and_deliver(cap, 11, "mx.attacker.example", 66, 9_000);
}

fn dns_dnssec_stripped(cap: &mut Capture) {
    // The first answer comes signed and validated; the second, a minute later, has neither
    // signature nor AD: someone between the client and its resolver removed them.
    cap.dns_dnssec(10, "example.net", 15, mx_answer(), true);
    cap.clock_us += 60_000_000;
    cap.dns_dnssec(10, "example.net", 15, mx_answer(), false);
    cap.other_findings.push("dnssec-stripped");
    resolve_and_deliver(cap, 10, "mx.example.net", 25, 12_000);
}

fn dns_injected_answer(cap: &mut Capture) {
    // Two lookups settle the resolver's IP TTL (52); the MX answer then arrives alone with TTL
    // 60 (an injector two hops from the sensor; the real answer was dropped).
    for host in ["www.example.net", "example.org"] {
        cap.dns(
            10,
            host,
            1,
            &[(12_000, 52, a_answer("www.example.net", 80))],
        );
    }
    cap.dns(10, "example.net", 15, &[(3_000, 60, mx_answer())]);
    cap.other_findings.push(INJECTED);
    resolve_and_deliver(cap, 10, "mx.example.net", 25, 12_000);
}

fn injected_starttls_reply(cap: &mut Capture) {
    // The 454 reply to STARTTLS comes from an on-path injector: IP TTL 61 where the server's
    // packets have 52, and an IP ID from another counter.
    let forged = SendPlan {
        forged: Some((61, 0x9000)),
        ..SendPlan::default()
    };
    cap.run(Session::new(rejected_454(), &[REJECTED, INJECTED]).plan(Step::StarttlsReply, forged));
}

fn missing_after_offer(cap: &mut Capture) {
    let first = clean_dialog(cap);
    cap.run(Session::new(first, &[]));
    let second = plaintext_dialog(cap, Dialog::postfix_capabilities(false));
    let mut s = Session::new(second, &[MISSING]);
    s.client = 11;
    s.gap_s = 20;
    cap.run(s);
}

fn missing_before_offer(cap: &mut Capture) {
    let first = plaintext_dialog(cap, Dialog::postfix_capabilities(false));
    let mut s = Session::new(first, &[MISSING]);
    s.client = 11;
    cap.run(s);
    let second = clean_dialog(cap);
    let mut s = Session::new(second, &[]);
    s.gap_s = 20;
    cap.run(s);
}

fn command_rejected_454(cap: &mut Capture) {
    cap.run(Session::new(rejected_454(), &[REJECTED]));
}

fn command_rejected_500(cap: &mut Capture) {
    let d = upgrade_dialog("500 5.5.1 Command unrecognized", AfterStarttls::Continue);
    cap.run(Session::new(d, &[REJECTED]));
}

fn handshake_reset(cap: &mut Capture) {
    cap.run(Session::new(
        ready_then(AfterStarttls::ServerReset),
        &[HANDSHAKE_FAILED],
    ));
}

fn handshake_fin(cap: &mut Capture) {
    cap.run(Session::new(
        ready_then(AfterStarttls::ServerClose),
        &[HANDSHAKE_FAILED],
    ));
}

fn handshake_alert(cap: &mut Capture) {
    cap.run(Session::new(
        ready_then(AfterStarttls::ServerAlert),
        &[HANDSHAKE_FAILED],
    ));
}

fn handshake_garbage(cap: &mut Capture) {
    let junk = vec![
        0x00, 0x00, 0x01, 0x9c, 0xfe, 0x42, 0x07, 0x00, 0x13, 0x37, 0x80, 0x00, 0x00, 0x00, 0x2a,
        0xff,
    ];
    cap.run(Session::new(
        ready_then(AfterStarttls::ClientGarbage(junk)),
        &[HANDSHAKE_FAILED],
    ));
}

fn fallback_after_reset(cap: &mut Capture) {
    cap.run(Session::new(
        ready_then(AfterStarttls::ServerReset),
        &[HANDSHAKE_FAILED],
    ));
    let retry = plaintext_dialog(cap, Dialog::postfix_capabilities(true));
    let mut s = Session::new(retry, &[FALLBACK, BY_CLIENT]);
    s.gap_s = 30;
    cap.run(s);
}

fn fallback_after_reject(cap: &mut Capture) {
    cap.run(Session::new(rejected_454(), &[REJECTED]));
    let retry = plaintext_dialog(cap, Dialog::postfix_capabilities(false));
    let mut s = Session::new(retry, &[FALLBACK, MISSING]);
    s.gap_s = 60;
    cap.run(s);
}

fn plaintext_by_client(cap: &mut Capture) {
    let d = plaintext_dialog(cap, Dialog::postfix_capabilities(true));
    cap.run(Session::new(d, &[BY_CLIENT]));
}

fn offer_then_quit(cap: &mut Capture) {
    let mut d = plaintext_dialog(cap, Dialog::postfix_capabilities(true));
    d.mails.clear();
    cap.run(Session::new(d, &[]));
}

fn helo_only(cap: &mut Capture) {
    let mut d = plaintext_dialog(cap, Vec::new());
    d.greeting = Greeting::Helo;
    cap.run(Session::new(d, &[]));
}

fn injection_pipelined(cap: &mut Capture) {
    let mut d = clean_dialog(cap);
    d.upgrade = Upgrade::Starttls {
        reply: "220 2.0.0 Ready to start TLS".into(),
        pipelined: Some("RSET".into()),
        then: AfterStarttls::Tls,
    };
    cap.run(Session::new(d, &[CLEARTEXT_AFTER]));
}

fn cleartext_after_220(cap: &mut Capture) {
    let d = ready_then(AfterStarttls::ClientCleartext(vec![format!(
        "EHLO {CLIENT}"
    )]));
    // 220 came and no handshake followed: a failed upgrade too (DESIGN.md's definition).
    cap.run(Session::new(d, &[CLEARTEXT_AFTER, HANDSHAKE_FAILED]));
}

fn server_cleartext_after_220(cap: &mut Capture) {
    let d = ready_then(AfterStarttls::ServerCleartext("250 2.0.0 Ok".into()));
    cap.run(Session::new(d, &[CLEARTEXT_AFTER, HANDSHAKE_FAILED]));
}

fn overlap_conflict(cap: &mut Capture) {
    let d = clean_dialog(cap);
    // The banner goes out whole; a "retransmission" of 13 bytes inside it disagrees in one.
    let offset = "220 mx.example.net ".len();
    let plan = SendPlan {
        overlay: Some((offset, b"ESMTP Pxstfix".to_vec())),
        ..SendPlan::default()
    };
    cap.run(Session::new(d, &[OVERLAP]).plan(Step::Banner, plan));
}

fn mid_stream(cap: &mut Capture) {
    let d = plaintext_dialog(cap, Dialog::postfix_capabilities(true));
    let mut s = Session::new(d, &[]);
    s.keep = Keep::FromStep(Step::Command);
    cap.run(s);
}

fn client_only(cap: &mut Capture) {
    let d = clean_dialog(cap);
    let mut s = Session::new(d, &[]);
    s.keep = Keep::ClientOnly;
    cap.run(s);
}

/// Exactly `len` bytes of message whose text contains "\r\n.\r\n" and command-looking lines,
/// which an analyzer that does not skip BDAT chunks would misread.
fn bdat_body(len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(
        b"From: <alice@example.org>\r\nTo: <bob@example.net>\r\nSubject: chunked\r\n\r\n",
    );
    b.extend_from_slice(b"A BDAT chunk is counted, not terminated, so this line:\r\n.\r\n");
    b.extend_from_slice(b"does not end the message, and these are not commands:\r\n");
    b.extend_from_slice(
        b"MAIL FROM:<decoy@example.com>\r\nRCPT TO:<decoy@example.com>\r\nSTARTTLS\r\nQUIT\r\n",
    );
    let filler = b"lorem ipsum dolor sit amet consectetur adipiscing elit ";
    while b.len() + 2 < len {
        let room = len - 2 - b.len();
        if room >= 60 {
            b.extend_from_slice(&filler[..filler.len() - 1]);
            b.extend_from_slice(b"\r\n");
        } else {
            b.extend(filler.iter().cycle().take(room));
        }
    }
    b.extend_from_slice(b"\r\n");
    b.truncate(len);
    b
}

fn pipelining_and_bdat(cap: &mut Capture) {
    let mut d = plaintext_dialog(cap, Dialog::postfix_capabilities(true));
    d.pipelining = true;
    d.mails = vec![Mail {
        from: "alice@example.org".into(),
        to: vec!["bob@example.net".into(), "carol@example.net".into()],
        body: Body::Bdat(bdat_body(1000)),
    }];
    cap.run(Session::new(d, &[BY_CLIENT]));
}

fn data_dot_stuffing(cap: &mut Capture) {
    let mut d = plaintext_dialog(cap, Dialog::postfix_capabilities(false));
    let mut first = boring_message(&mut cap.prng, "alice@example.org", "bob@example.net", 3);
    first.extend_from_slice(
        b".\r\n..two dots in the original\r\n.hidden line\r\nMAIL FROM:<decoy@example.com>\r\n",
    );
    let mut second = boring_message(&mut cap.prng, "alice@example.org", "carol@example.net", 4);
    second.extend_from_slice(b"...\r\nQUIT\r\n.\r\nend\r\n");
    d.mails = vec![
        Mail {
            from: "alice@example.org".into(),
            to: vec!["bob@example.net".into()],
            body: Body::Data(first),
        },
        Mail {
            from: "alice@example.org".into(),
            to: vec!["carol@example.net".into()],
            body: Body::Data(second),
        },
    ];
    cap.run(Session::new(d, &[NOT_SUPPORTED]));
}

fn submission_587(cap: &mut Capture) {
    let d = clean_dialog(cap);
    let mut s = Session::new(d, &[]);
    s.port = 587;
    cap.run(s);
}

fn implicit_tls_465(cap: &mut Capture) {
    let mut d = clean_dialog(cap);
    d.upgrade = Upgrade::Implicit;
    let mut s = Session::new(d, &[]);
    s.port = 465;
    cap.run(s);
}

/// Every scenario, in the order `--list` shows them.
pub fn all() -> Vec<Scenario> {
    use Compression::{Gzip, Zstd};
    use Container::{Pcap, PcapNg};
    let clean = Scenario::new(
        "clean-starttls",
        "One SMTP session: the server offers STARTTLS, the client sends it, gets 220 and completes a TLS handshake; the mail goes inside TLS.",
        clean_starttls,
    );
    let stripped = Scenario::new(
        "stripped-xxxxxxxa",
        "Cisco ASA style stripping: the banner is masked as 220 ***... and the EHLO reply's STARTTLS line is overwritten with XXXXXXXA; the client sends mail in cleartext.",
        stripped_xxxxxxxa,
    );
    let v = |name, description| Scenario::variant_of(&clean, name, description);
    vec![
        clean,
        Scenario::new(
            "plaintext-no-starttls",
            "The server does not offer STARTTLS (no session in the capture says it ever did); the client sends mail in cleartext.",
            plaintext_no_starttls,
        ),
        stripped,
        Scenario::new(
            "stripped-xxxxxxxx",
            "The EHLO reply's last line is 250 XXXXXXXX where STARTTLS stood; the client sends mail in cleartext.",
            stripped_xxxxxxxx,
        ),
        Scenario::new(
            "stripped-asterisks",
            "The EHLO reply's STARTTLS line is masked as ********; the client sends mail in cleartext.",
            stripped_asterisks,
        ),
        Scenario::new(
            "stripped-near-miss",
            "The EHLO reply lists STARTTLX (one letter changed, same length) instead of STARTTLS; the client sends mail in cleartext.",
            stripped_near_miss,
        ),
        Scenario::new(
            "stripped-near-miss-deletion",
            "The EHLO reply lists STARTLS (one letter deleted, so the reply is a byte shorter) instead of STARTTLS; the client sends mail in cleartext.",
            stripped_near_miss_deletion,
        ),
        Scenario::new(
            "missing-after-offer",
            "Two sessions to the same server from different clients: the first is offered STARTTLS and uses TLS; 20 s later the second sees no STARTTLS and sends mail in cleartext.",
            missing_after_offer,
        ),
        Scenario::new(
            "missing-before-offer",
            "Two sessions to the same server from different clients: the first sees no STARTTLS and sends mail in cleartext; 20 s later the second is offered STARTTLS and uses TLS.",
            missing_before_offer,
        ),
        Scenario::new(
            "command-rejected-454",
            "The server offers STARTTLS; the client sends it and gets 454 4.7.0 TLS not available; the client quits.",
            command_rejected_454,
        ),
        Scenario::new(
            "command-rejected-500",
            "The server offers STARTTLS; the client sends it and gets 500 5.5.1 Command unrecognized (a firewall blocking the command); the client quits.",
            command_rejected_500,
        ),
        Scenario::new(
            "handshake-reset",
            "STARTTLS gets 220; the client sends a ClientHello and the server resets the connection.",
            handshake_reset,
        ),
        Scenario::new(
            "handshake-fin",
            "STARTTLS gets 220; the client sends a ClientHello and the server closes the connection (FIN) without a TLS record.",
            handshake_fin,
        ),
        Scenario::new(
            "handshake-alert",
            "STARTTLS gets 220; the client sends a ClientHello and the server answers with a fatal handshake_failure alert, then closes.",
            handshake_alert,
        ),
        Scenario::new(
            "handshake-garbage",
            "STARTTLS gets 220; the client then sends bytes that are neither TLS nor SMTP and the server closes.",
            handshake_garbage,
        ),
        Scenario::new(
            "fallback-after-reset",
            "A STARTTLS handshake is reset; 30 s later the same client connects to the same server again, is offered STARTTLS, ignores it and sends the mail in cleartext.",
            fallback_after_reset,
        ),
        Scenario::new(
            "fallback-after-reject",
            "STARTTLS is rejected with 454; a minute later the same client connects to the same server, which now offers no STARTTLS, and sends the mail in cleartext.",
            fallback_after_reject,
        ),
        Scenario::new(
            "plaintext-by-client",
            "The server offers STARTTLS; the client never sends it and sends mail in cleartext.",
            plaintext_by_client,
        ),
        Scenario::new(
            "offer-then-quit",
            "The server offers STARTTLS; the client sends no STARTTLS and no mail, only QUIT.",
            offer_then_quit,
        ),
        Scenario::new(
            "injection-pipelined",
            "The client sends STARTTLS\\r\\nRSET\\r\\n in one segment before the 220 (a command pipelined into the TLS upgrade); TLS then completes.",
            injection_pipelined,
        ),
        Scenario::new(
            "cleartext-after-220",
            "STARTTLS gets 220, but the client sends EHLO in cleartext instead of a ClientHello; the server hangs up, so no TLS handshake happens either.",
            cleartext_after_220,
        ),
        Scenario::new(
            "server-cleartext-after-220",
            "STARTTLS gets 220, then the server side sends a cleartext 250 line before any handshake; the client hangs up without sending a ClientHello.",
            server_cleartext_after_220,
        ),
        Scenario::new(
            "overlap-conflict",
            "A clean STARTTLS session in which a retransmission of 13 bytes inside the banner disagrees with the original in one byte (one conflicting overlap).",
            overlap_conflict,
        ),
        Scenario::new(
            "mid-stream",
            "The capture starts after the EHLO reply, at the client's MAIL FROM of a cleartext session: the offer cannot be judged.",
            mid_stream,
        ),
        Scenario::new(
            "client-only",
            "Only the client's direction of a STARTTLS session was captured (asymmetric routing).",
            client_only,
        ),
        Scenario::new(
            "helo-only",
            "The client greets with HELO (no capabilities, so no STARTTLS offer) and sends mail in cleartext.",
            helo_only,
        ),
        Scenario::new(
            "pipelining-and-bdat",
            "The server offers STARTTLS, PIPELINING and CHUNKING; the client ignores STARTTLS, pipelines MAIL/RCPT/RCPT and sends BDAT 1000 LAST whose 1000 bytes contain \\r\\n.\\r\\n and command-like lines.",
            pipelining_and_bdat,
        ),
        Scenario::new(
            "data-dot-stuffing",
            "No STARTTLS offered; two mail transactions whose DATA bodies contain dot-stuffed lines (.., ...) and command-like lines.",
            data_dot_stuffing,
        ),
        Scenario::new("submission-587", "A clean STARTTLS session on the submission port 587.", submission_587),
        Scenario::new(
            "implicit-tls-465",
            "Implicit TLS on port 465: the client sends a ClientHello right after the TCP handshake; no cleartext SMTP at all.",
            implicit_tls_465,
        ),
        Scenario::new(
            "dns-mx-linked",
            "The client looks up example.net MX (mx.example.net) and its address, then delivers over STARTTLS to that address: the session is linked to the lookup.",
            dns_mx_linked,
        ),
        Scenario::new(
            "dns-injection",
            "Two responses to one MX query: a forged one (mx.attacker.example, IP TTL 60) 4 ms after the query and the real one 31 ms after; the client follows the forged answer.",
            dns_injection,
        ),
        Scenario::new(
            "dns-unlisted-ip",
            "The client resolves example.net MX to mx.example.net (198.51.100.25) but connects to 198.51.100.99.",
            dns_unlisted_ip,
        ),
        Scenario::new(
            "dns-busy-client",
            "One client resolves example.org's MX and address, then 300 other hosts within a minute, then example.net's MX and mx.example.net, and delivers to it: the session is linked to example.net although the client's memory overflowed.",
            dns_busy_client,
        ),
        Scenario::new(
            "dns-busy-client-forgot-address",
            "One client resolves example.net's MX host (198.51.100.25), then example.org's MX, then 300 other hosts, then example.org's MX host again, and delivers to 198.51.100.25: the address that listed the server was forgotten, so the session is neither linked nor judged to go to an unlisted address.",
            dns_busy_client_forgot_address,
        ),
        Scenario::new(
            "dns-busy-client-forgot-mx",
            "One client resolves example.net's MX host (198.51.100.25), then 64 other domains' MX hosts, and delivers to 198.51.100.25: the MX answer that listed the server was dropped, so the session is neither linked nor judged to go to an unlisted address.",
            dns_busy_client_forgot_mx,
        ),
        Scenario::new(
            "dns-tcp-mx",
            "The MX lookup goes over TCP (length-prefixed); the address lookup over UDP; then the delivery is linked to them.",
            dns_tcp_mx,
        ),
        Scenario::new(
            "dns-mx-mismatch",
            "Clients 10 and 12 get example.net MX mx.example.net; client 11 gets only mx.attacker.example (the real answer was dropped) and delivers there: mx-mismatch, and the session carries the finding's id.",
            dns_mx_mismatch,
        ),
        Scenario::new(
            "dns-dnssec-stripped",
            "Two DO queries for example.net MX a minute apart: the first answer carries RRSIG and AD, the second neither; then the delivery.",
            dns_dnssec_stripped,
        ),
        Scenario::new(
            "dns-injected-answer",
            "Two address lookups answered with IP TTL 52, then an MX answer from the same resolver address with IP TTL 60 (an injector at another hop distance), then the delivery, which carries the finding's id.",
            dns_injected_answer,
        ),
        Scenario::new(
            "injected-starttls-reply",
            "The server offers STARTTLS; the 454 reply to STARTTLS arrives with IP TTL 61 (the server's packets: 52) and a foreign IP ID: an injected reply that blocks the upgrade.",
            injected_starttls_reply,
        ),
        Scenario::new(
            "nonstandard-port-2525",
            "The plaintext-no-starttls session on port 2525: SMTP must be recognised by its content.",
            nonstandard_port_2525,
        ),
        v("clean-starttls-out-of-order", "clean-starttls with the EHLO reply in three segments captured in the order 1, 3, 2 and the ClientHello in two segments captured in reverse order.")
            .build(clean_out_of_order),
        v("clean-starttls-retransmit", "clean-starttls with identical retransmissions of the banner, both EHLO reply segments, STARTTLS and the server's TLS flight.")
            .build(clean_retransmit),
        v("clean-starttls-split-ehlo-reply", "clean-starttls with the EHLO reply split over three TCP segments.").build(clean_split_ehlo),
        v("clean-starttls-seq-wrap", "clean-starttls with initial sequence numbers just below 2^32 so both directions wrap inside the EHLO exchange.")
            .build(clean_seq_wrap),
        v("clean-starttls-ipv4-fragments", "clean-starttls with the EHLO reply packet split into IPv4 fragments.").build(clean_fragments),
        v("clean-starttls-vlan", "clean-starttls over an 802.1Q VLAN (id 100).").link(Link::Vlan { vid: 100 }),
        v("clean-starttls-qinq", "clean-starttls over QinQ (802.1ad S-tag 300, 802.1Q C-tag 100).").link(Link::QinQ { outer: 300, inner: 100 }),
        v("clean-starttls-ipv6", "clean-starttls over IPv6.").ipv6(),
        v("clean-starttls-sll", "clean-starttls in Linux cooked capture v1 framing (linktype 113).").link(Link::Sll),
        v("clean-starttls-sll2", "clean-starttls in Linux cooked capture v2 framing (linktype 276).").link(Link::Sll2),
        v("clean-starttls-null-loopback", "clean-starttls in BSD loopback framing (linktype 0, little-endian AF_INET).").link(Link::Null),
        v("clean-starttls-null-loopback-ipv6", "clean-starttls over IPv6 in BSD loopback framing (linktype 0, AF_INET6 = 30 as on Darwin).")
            .link(Link::Null)
            .ipv6(),
        v("clean-starttls-raw-ip", "clean-starttls as raw IP packets (linktype 101).").link(Link::RawIp),
        v("clean-starttls-pcapng", "clean-starttls in a pcapng file.").format(PcapNg, Compression::None),
        v("clean-starttls-gzip", "clean-starttls as a gzip-compressed pcap.").format(Pcap, Gzip),
        v("clean-starttls-zstd", "clean-starttls as a zstd-compressed pcap.").format(Pcap, Zstd),
        Scenario::variant_of(&stripped, "stripped-xxxxxxxa-ipv6-pcapng", "stripped-xxxxxxxa over IPv6, in a pcapng file.")
            .ipv6()
            .format(PcapNg, Compression::None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::read_back;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn scenario(name: &str) -> Scenario {
        all().into_iter().find(|s| s.name == name).unwrap()
    }

    /// (from_client, seq, payload) of every TCP segment in an Ethernet capture's frames.
    fn segments(frames: &[Frame]) -> Vec<(bool, u32, Vec<u8>)> {
        frames
            .iter()
            .filter_map(|f| {
                let p = SlicedPacket::from_ethernet(&f.data).unwrap();
                match p.transport {
                    Some(TransportSlice::Tcp(t)) => Some((
                        t.destination_port() == 25,
                        t.sequence_number(),
                        t.payload().to_vec(),
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// The byte stream one direction carries, reassembled by sequence number (first copy wins).
    fn stream(segs: &[(bool, u32, Vec<u8>)], from_client: bool) -> Vec<u8> {
        let mine: Vec<_> = segs
            .iter()
            .filter(|s| s.0 == from_client && !s.2.is_empty())
            .collect();
        let base = mine[0].1;
        let mut out: Vec<Option<u8>> = Vec::new();
        for (_, seq, data) in mine {
            let off = seq.wrapping_sub(base) as usize;
            if out.len() < off + data.len() {
                out.resize(off + data.len(), None);
            }
            for (i, b) in data.iter().enumerate() {
                out[off + i].get_or_insert(*b);
            }
        }
        out.into_iter().map(|b| b.expect("no gap")).collect()
    }

    #[test]
    fn synth_names_are_unique_and_cover_the_brief() {
        let names: Vec<&str> = all().iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for required in [
            "clean-starttls",
            "plaintext-no-starttls",
            "stripped-xxxxxxxa",
            "stripped-xxxxxxxx",
            "stripped-near-miss",
            "missing-after-offer",
            "command-rejected-454",
            "command-rejected-500",
            "handshake-reset",
            "handshake-alert",
            "fallback-after-reset",
            "plaintext-by-client",
            "injection-pipelined",
            "cleartext-after-220",
            "overlap-conflict",
            "mid-stream",
            "client-only",
            "helo-only",
            "pipelining-and-bdat",
            "data-dot-stuffing",
            "submission-587",
            "implicit-tls-465",
            "nonstandard-port-2525",
            "stripped-xxxxxxxa-ipv6-pcapng",
        ] {
            assert!(names.contains(&required), "{required}");
        }
    }

    #[test]
    fn synth_scenarios_are_deterministic_and_time_ordered() {
        for s in all() {
            let (a, ea) = s.render();
            let (b, eb) = s.render();
            assert_eq!(a.len(), b.len(), "{}", s.name);
            assert!(
                a.iter()
                    .zip(&b)
                    .all(|(x, y)| x.ts_us == y.ts_us && x.data == y.data),
                "{}",
                s.name
            );
            assert_eq!(ea.to_json().unwrap(), eb.to_json().unwrap());
            assert!(a.windows(2).all(|w| w[0].ts_us <= w[1].ts_us), "{}", s.name);
            assert!(a[0].ts_us >= START_US);
            assert!(!ea.sessions.is_empty());
        }
    }

    #[test]
    fn synth_variants_expect_exactly_what_their_base_expects() {
        let sessions = |name: &str| {
            let e = scenario(name).render().1;
            serde_json::to_string(&(e.sessions, e.finding_counts)).unwrap()
        };
        let clean = sessions("clean-starttls");
        for s in all()
            .iter()
            .filter(|s| s.name.starts_with("clean-starttls-"))
        {
            assert_eq!(sessions(s.name), clean, "{}", s.name);
        }
        assert_eq!(
            sessions("stripped-xxxxxxxa-ipv6-pcapng"),
            sessions("stripped-xxxxxxxa")
        );
        assert_eq!(sessions("submission-587").replace("587", "25"), clean);
    }

    #[test]
    fn synth_clean_session_streams_reassemble_to_the_dialog() {
        for name in [
            "clean-starttls",
            "clean-starttls-out-of-order",
            "clean-starttls-retransmit",
            "clean-starttls-seq-wrap",
        ] {
            let (frames, _) = scenario(name).render();
            let segs = segments(&frames);
            let server = stream(&segs, false);
            let client = stream(&segs, true);
            assert!(
                server.starts_with(
                    b"220 mx.example.net ESMTP Postfix (Debian/GNU)\r\n250-mx.example.net\r\n"
                ),
                "{name}"
            );
            assert!(
                server.windows(14).any(|w| w == b"250-STARTTLS\r\n"),
                "{name}"
            );
            assert!(
                client.starts_with(b"EHLO mail.example.org\r\nSTARTTLS\r\n\x16\x03\x01"),
                "{name}"
            );
            let reply_end = server
                .windows(30)
                .position(|w| w == b"220 2.0.0 Ready to start TLS\r\n")
                .unwrap()
                + 30;
            assert_eq!(
                &server[reply_end..reply_end + 3],
                &[0x16, 0x03, 0x03],
                "{name}"
            );
        }
        // The wrap really happens inside the EHLO exchange.
        let (frames, _) = scenario("clean-starttls-seq-wrap").render();
        let segs = segments(&frames);
        let ehlo = segs
            .iter()
            .find(|s| s.0 && s.2.starts_with(b"EHLO"))
            .unwrap();
        assert!(ehlo.1.checked_add(ehlo.2.len() as u32).is_none());
        let reply = segs
            .iter()
            .find(|s| !s.0 && s.2.starts_with(b"250-"))
            .unwrap();
        assert!(reply.1.checked_add(reply.2.len() as u32).is_none());
    }

    #[test]
    fn synth_stripped_scenarios_carry_no_starttls_token() {
        for name in [
            "stripped-xxxxxxxa",
            "stripped-xxxxxxxx",
            "stripped-near-miss",
            "stripped-near-miss-deletion",
            "stripped-asterisks",
        ] {
            let (frames, e) = scenario(name).render();
            let server = stream(&segments(&frames), false);
            assert!(!server.windows(8).any(|w| w == b"STARTTLS"), "{name}");
            assert_eq!(e.sessions[0].verdict, "starttls-stripped");
        }
        let (frames, _) = scenario("stripped-xxxxxxxa").render();
        let server = stream(&segments(&frames), false);
        assert!(server.starts_with(b"220 ******************************\r\n"));
        assert!(server.windows(14).any(|w| w == b"250-XXXXXXXA\r\n"));
    }

    #[test]
    fn synth_overlap_conflict_disagrees_exactly_once() {
        let (frames, e) = scenario("overlap-conflict").render();
        let segs = segments(&frames);
        let banner = segs
            .iter()
            .find(|s| !s.0 && s.2.starts_with(b"220 "))
            .unwrap();
        let overlay = segs
            .iter()
            .find(|s| !s.0 && s.2 == b"ESMTP Pxstfix")
            .unwrap();
        let off = overlay.1.wrapping_sub(banner.1) as usize;
        assert_eq!(&banner.2[off..off + 13], b"ESMTP Postfix");
        assert_eq!(e.finding_counts.get("tcp-overlap-conflict"), Some(&1));
        assert_eq!(e.sessions[0].verdict, "tcp-overlap-conflict");
    }

    #[test]
    fn synth_bdat_chunk_is_exactly_1000_bytes_with_a_dot_line() {
        let body = bdat_body(1000);
        assert_eq!(body.len(), 1000);
        assert!(body.windows(5).any(|w| w == b"\r\n.\r\n"));
        let (frames, e) = scenario("pipelining-and-bdat").render();
        let client = stream(&segments(&frames), true);
        let at = client
            .windows(15)
            .position(|w| w == b"BDAT 1000 LAST\r")
            .unwrap()
            + 16;
        assert_eq!(&client[at..at + 1000], &body[..]);
        assert_eq!(&client[at + 1000..], b"QUIT\r\n");
        assert_eq!(e.sessions[0].mail_transactions, Some(1));
    }

    #[test]
    fn synth_partial_captures_keep_what_they_say() {
        let (frames, e) = scenario("client-only").render();
        assert!(frames.iter().all(|f| f.side == Side::Client));
        assert_eq!(e.sessions[0].verdict, "certificate-not-observable");
        assert_eq!(e.sessions[0].tls_started, Some(true));
        let (frames, _) = scenario("mid-stream").render();
        let first = &segments(&frames)[0];
        assert!(first.0 && first.2.starts_with(b"MAIL FROM:"));
    }

    #[test]
    fn synth_tls_started_means_the_client_spoke_tls_first() {
        for (name, started) in [
            ("handshake-reset", true),
            ("handshake-fin", true),
            ("handshake-alert", true),
            ("handshake-garbage", false),
            ("cleartext-after-220", false),
            ("server-cleartext-after-220", false),
            ("command-rejected-454", false),
            ("injection-pipelined", true),
        ] {
            let s = &scenario(name).render().1.sessions[0];
            assert_eq!(s.tls_started, Some(started), "{name}");
            assert_ne!(s.verdict, "tls-ok", "{name}");
        }
    }

    #[test]
    fn synth_session_gaps_are_at_least_a_second() {
        for name in [
            "missing-after-offer",
            "fallback-after-reset",
            "fallback-after-reject",
            "missing-before-offer",
        ] {
            let (frames, e) = scenario(name).render();
            assert_eq!(e.sessions.len(), 2);
            let segs: Vec<_> = frames
                .iter()
                .map(|f| {
                    let p = SlicedPacket::from_ethernet(&f.data).unwrap();
                    let port = match p.transport {
                        Some(TransportSlice::Tcp(t)) => t.source_port().max(t.destination_port()),
                        _ => 0,
                    };
                    (f.ts_us, port)
                })
                .collect();
            let switch = segs.windows(2).find(|w| w[0].1 != w[1].1).unwrap();
            assert!(switch[1].0 - switch[0].0 >= 1_000_000, "{name}");
        }
    }

    #[test]
    fn synth_ipv6_variant_is_ipv6_throughout() {
        let (frames, _) = scenario("clean-starttls-ipv6").render();
        for f in &frames {
            let p = SlicedPacket::from_ethernet(&f.data).unwrap();
            assert!(matches!(p.net, Some(NetSlice::Ipv6(_))));
        }
    }

    #[test]
    fn synth_written_files_read_back_with_their_link_types() {
        let dir =
            std::env::temp_dir().join(format!("stripwatch-synth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for s in all() {
            let path = s.write(&dir).unwrap();
            assert_eq!(path.file_name().unwrap().to_string_lossy(), s.file_name());
            let raw = std::fs::read(&path).unwrap();
            let bytes = match s.format.compression {
                Compression::None => raw,
                Compression::Gzip => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&raw[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
                Compression::Zstd => zstd::decode_all(&raw[..]).unwrap(),
            };
            let (linktype, packets) = read_back(&bytes);
            assert_eq!(linktype, i32::from(s.link.linktype()), "{}", s.name);
            let (frames, expected) = s.render();
            assert_eq!(packets.len(), frames.len());
            assert!(
                packets
                    .iter()
                    .zip(&frames)
                    .all(|(p, f)| p.0 == f.ts_us && p.1 == f.data)
            );
            let json: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.join(format!("{}.expected.json", s.name))).unwrap(),
            )
            .unwrap();
            assert_eq!(
                json["sessions"].as_array().unwrap().len(),
                expected.sessions.len()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
