//! The SMTP session state machine. It is fed reassembled bytes of both directions in capture
//! order and records the facts the detection rules judge: the banner, the EHLO capabilities as
//! sent, the STARTTLS exchange, what came after the `220`, and how many transactions went in
//! cleartext. Message bodies are scanned for their end and never stored.

use super::capability::{self, TokenClass};
use super::line::LineSplitter;
use super::reply;
use super::sasl;
use crate::flow::reassembly::{OverlapConflict, StreamEvent};
use crate::record::{CleartextAuth, EndReason, HandshakeFailure, Side, Verb};
use crate::tls::record::{self, RecordScanner};
use std::collections::VecDeque;

/// Per-session limits and privacy switches.
#[derive(Clone, Copy, Debug)]
pub struct SmtpConfig {
    /// Longest command or reply line kept; longer ones are cut and counted.
    pub max_line: usize,
    /// Client bytes held while waiting for the reply to DATA.
    pub max_held: usize,
    /// Commands awaiting replies (pipelining depth) before the oldest is forgotten.
    pub max_pending: usize,
    /// Capability lines kept per EHLO reply.
    pub max_capabilities: usize,
    /// Keep envelope addresses (MAIL FROM / RCPT TO). Off unless the user asks.
    pub log_envelope: bool,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            max_line: 2048,
            max_held: 64 * 1024,
            max_pending: 128,
            max_capabilities: 64,
            log_envelope: false,
        }
    }
}

/// Cleartext where only TLS may be: the command-injection window of RFC 3207 §5.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CleartextEvent {
    /// Who sent the cleartext.
    pub side: Side,
    /// `after-starttls` (the client pipelined it before the 220) or `after-220` (after the 220,
    /// before the client's first TLS byte: bytes that answer a ClientHello are not in the
    /// window, they are the handshake's failure).
    pub phase: &'static str,
    /// The command verb or reply code that was sent in the clear (never arguments).
    pub what: String,
    /// Bytes of that line.
    pub bytes: usize,
    /// Capture time.
    pub ts_us: i64,
}

/// A capability token that looks like a destroyed STARTTLS.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OverwrittenToken {
    /// The capability line as the server (or the box in the path) sent it.
    pub line: String,
    /// Why it looks overwritten.
    pub class: TokenClass,
}

/// A TCP overlap conflict with its capture time and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedConflict {
    /// Which direction's stream had two versions.
    pub side: Side,
    /// Capture time of the later segment.
    pub ts_us: i64,
    /// Offsets and lengths.
    pub conflict: OverlapConflict,
}

/// Everything the rules need to know about a session.
#[derive(Clone, Debug, Default)]
pub struct SessionFacts {
    /// The greeting reply code (220 normally).
    pub banner_code: Option<u16>,
    /// The first line of the greeting text.
    pub banner: Option<String>,
    /// The greeting hides the server behind `*` (ASA-style inspection).
    pub banner_masked: bool,
    /// `EHLO` or `HELO`, whichever the client used first.
    pub greeting_verb: Option<Verb>,
    /// The name the client gave in EHLO/HELO.
    pub ehlo_name: Option<String>,
    /// The first line of the server's EHLO reply (its own name).
    pub ehlo_reply_name: Option<String>,
    /// Capability lines of the first cleartext EHLO reply, verbatim.
    pub ehlo_capabilities: Vec<String>,
    /// Capability lines beyond the limit.
    pub ehlo_capabilities_dropped: u32,
    /// A positive EHLO reply was seen.
    pub ehlo_reply_seen: bool,
    /// The code of the first reply to EHLO (a 5xx means no extensions, hence no STARTTLS).
    pub ehlo_reply_code: Option<u16>,
    /// Capture time of that reply.
    pub ehlo_reply_ts: Option<i64>,
    /// The EHLO reply listed STARTTLS.
    pub starttls_offered: bool,
    /// Tokens that look like an overwritten STARTTLS.
    pub overwritten_tokens: Vec<OverwrittenToken>,
    /// The client sent STARTTLS.
    pub starttls_sent: bool,
    /// Capture time of the STARTTLS command.
    pub starttls_ts: Option<i64>,
    /// The reply code to STARTTLS.
    pub starttls_reply_code: Option<u16>,
    /// The reply text to STARTTLS.
    pub starttls_reply_text: Option<String>,
    /// TLS was due (220 to STARTTLS, or implicit TLS).
    pub tls_expected: bool,
    /// The port implies TLS from the first byte (465).
    pub implicit_tls: bool,
    /// The client's first bytes after the 220 (or on an implicit-TLS port) were a TLS record.
    pub tls_started: bool,
    /// Record-level view of the client's TLS bytes.
    pub tls_client: record::RecordSummary,
    /// Record-level view of the server's TLS bytes.
    pub tls_server: record::RecordSummary,
    /// Why the upgrade failed, when it did.
    pub handshake_failure: Option<HandshakeFailure>,
    /// The client's hello (versions, SNI, ALPN).
    pub tls_client_hello_info: crate::tls::handshake::HandshakeInfo,
    /// The server's hello and certificate chain.
    pub tls_server_hello_info: crate::tls::handshake::HandshakeInfo,
    /// Handshake history, one letter per message, client upper case, server lower case.
    pub tls_history: String,
    /// Both sides finished the handshake.
    pub tls_handshake_completed: bool,
    /// Cleartext in the injection window.
    pub cleartext: Vec<CleartextEvent>,
    /// MAIL commands sent in cleartext.
    pub mail_transactions: u32,
    /// RCPT commands sent in cleartext.
    pub rcpt_commands: u32,
    /// DATA commands sent in cleartext.
    pub data_commands: u32,
    /// BDAT commands sent in cleartext.
    pub bdat_commands: u32,
    /// AUTH commands sent in cleartext (credentials are never recorded).
    pub auth_commands: u32,
    /// The last cleartext AUTH: mechanism name, credential lines counted, reply (`sasl.rs`).
    pub cleartext_auth: Option<CleartextAuth>,
    /// The client said QUIT.
    pub quit_sent: bool,
    /// Commands seen.
    pub commands: u32,
    /// Replies seen (complete, multi-line counted once).
    pub replies: u32,
    /// Envelope senders, only with `log_envelope`.
    pub mail_from: Vec<String>,
    /// Envelope recipients, only with `log_envelope`.
    pub rcpt_to: Vec<String>,
    /// Lines cut at the limit.
    pub overlong_lines: u32,
    /// Replies with no command waiting for them.
    pub unmatched_replies: u32,
    /// Lines that were neither a command nor a reply where one was due.
    pub malformed_lines: u32,
    /// Holes in the cleartext dialog (not in bodies or ciphertext).
    pub dialog_gaps: u32,
    /// Overlapping segments that disagreed.
    pub conflicts: Vec<TimedConflict>,
    /// Conflicts beyond the per-session limit.
    pub conflicts_dropped: u32,
    /// The server spoke SMTP or the client spoke SMTP or TLS: this flow is mail.
    pub recognised: bool,
    /// Fields whose value was cut at its limit (`ehlo_name`, `banner`, `ehlo_capabilities`,
    /// `starttls_reply_text`, `mail_from`, `rcpt_to`), each named once, in the order met: a
    /// reader comparing with another tool must know the value is not whole.
    pub truncated: Vec<&'static str>,
}

impl SessionFacts {
    /// Notes that `field` was cut at its limit.
    fn mark_truncated(&mut self, field: &'static str) {
        if !self.truncated.contains(&field) {
            self.truncated.push(field);
        }
    }
}

/// How many cleartext events and conflicts are kept per session; the rest are counted.
const MAX_EVENTS: usize = 16;
/// Envelope entries kept per session with `log_envelope`.
const MAX_ENVELOPE: usize = 64;
/// Bytes kept of one envelope address (RFC 5321 §4.5.3.1.3 allows a path of 256).
const MAX_ADDRESS: usize = 256;
/// Bytes kept of the EHLO/HELO name (a domain is at most 255).
const MAX_EHLO_NAME: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientMode {
    Command,
    /// DATA sent; holding bytes until the server says 354 (or refuses).
    DataPending,
    /// Inside a message body; looking only for CRLF.CRLF.
    DataBody,
    /// Inside a BDAT chunk of this many bytes still to come.
    Bdat(u64),
    /// After the 220: the first bytes tell TLS from cleartext.
    TlsExpect,
    /// TLS records.
    Tls,
    /// Nothing more to learn from this direction.
    Ignore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerMode {
    Reply,
    TlsExpect,
    Tls,
    Ignore,
}

/// Why a direction changed mode: what was seen on the wire. Every change of `client_mode` or
/// `server_mode` after construction goes through `SmtpSession::set_client_mode` or
/// `SmtpSession::set_server_mode` with one of these; the tables of which reason may take which
/// mode to which are on `client_step_allowed` and `server_step_allowed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transition {
    /// The client sent DATA: its next bytes wait for the server's 354.
    DataSent,
    /// The client sent BDAT with a non-zero size: that many bytes of chunk follow.
    BdatSent,
    /// The client sent more than the hold buffer takes without waiting for 354: it is sending
    /// the body.
    BodyWithout354,
    /// The server answered DATA with 354: a body follows.
    DataAccepted,
    /// The client sent DATA and nothing of the server was ever seen: a one-sided capture, so
    /// the body follows at once.
    DataWithoutServerSide,
    /// The client sent TLS after STARTTLS and nothing of the server was ever seen: the 220
    /// went by on the direction the capture does not show.
    TlsWithoutServerSide,
    /// The flow ended while DATA waited for a 354: the held bytes are judged as the body.
    EndedWaitingFor354,
    /// The server answered DATA with something other than 354: no body follows.
    DataRefused,
    /// The body ended with CRLF.CRLF.
    BodyEnded,
    /// The server replied while the body seemed to go on: its end fell into a hole.
    ReplyDuringBody,
    /// Bytes of a BDAT chunk went by, some of it is still to come.
    BdatBytes,
    /// The last byte of a BDAT chunk went by.
    BdatChunkDone,
    /// A hole shorter than the rest of the BDAT chunk.
    GapInChunk,
    /// A hole that reaches past the end of the BDAT chunk: where commands start again is lost.
    GapPastChunk,
    /// The server answered STARTTLS with 220: TLS or cleartext is next.
    StarttlsAccepted,
    /// The client's opening bytes are a TLS record where SMTP was expected.
    ClientOpenedWithTls,
    /// The first bytes after the switch are a TLS record.
    TlsStarted,
    /// The client's first bytes after the switch are an SMTP command: the session goes on in the
    /// clear.
    CommandInsteadOfTls,
    /// The server's first bytes after the switch are an SMTP reply: the session goes on in the
    /// clear.
    ReplyInsteadOfTls,
    /// The first bytes after the switch are neither a TLS record nor SMTP.
    NeitherTlsNorSmtp,
    /// A safeguard: the first bytes after the switch were looked at and left undecided.
    OpeningUndecided,
    /// A line that looks like a TLS record before any SMTP was seen: not a mail dialog.
    TlsLineBeforeSmtp,
    /// A hole where the first bytes after the switch or TLS records were due: records can no
    /// longer be followed.
    GapInTls,
    /// A TLS record that does not parse.
    TlsMalformed,
    /// Application data went both ways: the handshake has nothing more to tell.
    BothSidesEncrypted,
}

/// Whether the client may go from `from` to `to` for `why`. The table:
///
/// | from | to | why |
/// |---|---|---|
/// | Command | DataPending | DataSent |
/// | Command | Bdat | BdatSent |
/// | Command | TlsExpect | StarttlsAccepted, ClientOpenedWithTls |
/// | Command | Ignore | TlsLineBeforeSmtp |
/// | Command, DataPending, Bdat | DataBody | DataAccepted (1) |
/// | Command | DataBody | DataWithoutServerSide |
/// | Command | Tls | TlsWithoutServerSide |
/// | DataPending | DataBody | BodyWithout354, EndedWaitingFor354 |
/// | DataPending | Command | DataRefused |
/// | DataBody | Command | BodyEnded, ReplyDuringBody |
/// | Bdat(n) | Bdat(m), 0 < m < n | BdatBytes |
/// | Bdat(n) | Bdat(m), 0 < m <= n | GapInChunk (a hole may be empty) |
/// | Bdat | Command | BdatChunkDone, GapPastChunk |
/// | TlsExpect | Tls | TlsStarted |
/// | TlsExpect | Command | CommandInsteadOfTls, ReplyInsteadOfTls |
/// | TlsExpect | Ignore | NeitherTlsNorSmtp, OpeningUndecided, GapInTls |
/// | Tls | Ignore | TlsMalformed, BothSidesEncrypted, GapInTls |
///
/// Nothing leaves `Ignore`. (1) A 354 may come after the client stopped waiting for it: the
/// body overflowed the hold buffer and ended, and the client went on with commands or a chunk.
fn client_step_allowed(from: ClientMode, to: ClientMode, why: Transition) -> bool {
    use ClientMode as C;
    use Transition as T;
    match (from, to, why) {
        (C::Command, C::DataPending, T::DataSent)
        | (C::Command, C::Bdat(_), T::BdatSent)
        | (C::Command, C::TlsExpect, T::StarttlsAccepted | T::ClientOpenedWithTls)
        | (C::Command, C::Ignore, T::TlsLineBeforeSmtp)
        | (C::Command | C::DataPending | C::Bdat(_), C::DataBody, T::DataAccepted)
        | (C::Command, C::DataBody, T::DataWithoutServerSide)
        | (C::Command, C::Tls, T::TlsWithoutServerSide)
        | (C::DataPending, C::DataBody, T::BodyWithout354 | T::EndedWaitingFor354)
        | (C::DataPending, C::Command, T::DataRefused)
        | (C::DataBody, C::Command, T::BodyEnded | T::ReplyDuringBody)
        | (C::Bdat(_), C::Command, T::BdatChunkDone | T::GapPastChunk)
        | (C::TlsExpect, C::Tls, T::TlsStarted)
        | (C::TlsExpect, C::Command, T::CommandInsteadOfTls | T::ReplyInsteadOfTls)
        | (C::TlsExpect, C::Ignore, T::NeitherTlsNorSmtp | T::OpeningUndecided | T::GapInTls)
        | (C::Tls, C::Ignore, T::TlsMalformed | T::BothSidesEncrypted | T::GapInTls) => true,
        (C::Bdat(n), C::Bdat(m), T::BdatBytes) => 0 < m && m < n,
        (C::Bdat(n), C::Bdat(m), T::GapInChunk) => 0 < m && m <= n,
        _ => false,
    }
}

/// Whether the server may go from `from` to `to` for `why`. The table:
///
/// | from | to | why |
/// |---|---|---|
/// | Reply | TlsExpect | StarttlsAccepted, ClientOpenedWithTls |
/// | Reply | Ignore | TlsLineBeforeSmtp |
/// | TlsExpect | Tls | TlsStarted |
/// | TlsExpect | Reply | ReplyInsteadOfTls, CommandInsteadOfTls (the client went on in the clear) |
/// | TlsExpect | Ignore | NeitherTlsNorSmtp, GapInTls |
/// | Tls | Ignore | TlsMalformed, BothSidesEncrypted, GapInTls |
///
/// Nothing leaves `Ignore`.
fn server_step_allowed(from: ServerMode, to: ServerMode, why: Transition) -> bool {
    use ServerMode as S;
    use Transition as T;
    matches!(
        (from, to, why),
        (
            S::Reply,
            S::TlsExpect,
            T::StarttlsAccepted | T::ClientOpenedWithTls
        ) | (S::Reply, S::Ignore, T::TlsLineBeforeSmtp)
            | (S::TlsExpect, S::Tls, T::TlsStarted)
            | (
                S::TlsExpect,
                S::Reply,
                T::ReplyInsteadOfTls | T::CommandInsteadOfTls
            )
            | (S::TlsExpect, S::Ignore, T::NeitherTlsNorSmtp | T::GapInTls)
            | (
                S::Tls,
                S::Ignore,
                T::TlsMalformed | T::BothSidesEncrypted | T::GapInTls
            )
    )
}

/// The reply being assembled from its lines.
#[derive(Default)]
struct ReplyInProgress {
    code: Option<u16>,
    keep_lines: bool,
    lines: ReplyLines,
    /// A kept line was cut at the line limit (or lines beyond the limit were dropped).
    cut: bool,
}

impl ReplyInProgress {
    /// Forgets the reply but keeps the line buffers' memory for the next one.
    fn clear(&mut self) {
        self.code = None;
        self.keep_lines = false;
        self.lines.clear();
        self.cut = false;
    }
}

/// The kept lines of one reply, as raw bytes in one buffer with the end of each line: a reply
/// costs no allocation per line (the buffers are reused from reply to reply), and text is made
/// (`printable`) only for the lines a fact keeps: the banner, the EHLO reply's name and
/// capabilities, the STARTTLS reply. Bounded like the lines themselves: at most
/// `max_capabilities + 1` lines of at most `max_line` bytes.
#[derive(Default)]
struct ReplyLines {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl ReplyLines {
    /// Lines usually kept in one reply (an EHLO reply lists about ten capabilities), and their
    /// bytes: reserved at the first line so that a session's replies need no growing.
    const USUAL_LINES: usize = 16;
    const USUAL_BYTES: usize = 512;

    fn push(&mut self, line: &[u8]) {
        if self.ends.capacity() == 0 {
            self.ends.reserve(Self::USUAL_LINES);
            self.bytes.reserve(Self::USUAL_BYTES.max(line.len()));
        }
        self.bytes.extend_from_slice(line);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The raw bytes of the first line.
    fn first(&self) -> Option<&[u8]> {
        self.iter().next()
    }

    /// The lines in order.
    fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.bytes[start..end];
            start = end;
            line
        })
    }
}

/// One SMTP conversation.
pub struct SmtpSession {
    cfg: SmtpConfig,
    client_lines: LineSplitter,
    server_lines: LineSplitter,
    client_mode: ClientMode,
    server_mode: ServerMode,
    pending: VecDeque<Verb>,
    greeting_done: bool,
    /// Some byte of the server's dialog was seen. Until then a capture may be one-sided, and
    /// nothing should wait for a reply.
    server_spoke: bool,
    /// Some byte of the client was seen: until then replies may answer commands the capture
    /// does not show (`unseen_command`).
    client_spoke: bool,
    reply: ReplyInProgress,
    held: Vec<u8>,
    /// SASL lines the client still owes after a 334.
    sasl_lines: u32,
    /// Last bytes of the body for a terminator that straddles segments.
    body_tail: [u8; 4],
    body_tail_len: usize,
    tls_client: RecordScanner,
    tls_server: RecordScanner,
    /// Handshake history letters, both directions in capture order (Zeek's `ssl_history` style).
    tls_history: Vec<u8>,
    /// Reused line buffer (a line is copied out of the splitter before it is interpreted).
    scratch: Vec<u8>,
    /// First bytes after a switch to "TLS or cleartext?", per side [client, server]: the
    /// decision waits for a full record header or line so that it cannot depend on how the
    /// sender cut its segments.
    first: [Opening; 2],
    /// The client's opening bytes have been classified (TLS record or command).
    client_opening_decided: bool,
    /// A hole (capture loss, a frame cut by the snap length) ended the reading of a side's TLS
    /// bytes: whether the handshake then finished cannot be seen, so its end is no failure.
    tls_lost_to_gap: bool,
    /// The facts gathered so far.
    pub facts: SessionFacts,
}

impl SmtpSession {
    /// A session at its start. `implicit_tls` for ports where TLS begins at once (465).
    pub fn new(cfg: SmtpConfig, implicit_tls: bool) -> SmtpSession {
        let mut s = SmtpSession {
            cfg,
            client_lines: LineSplitter::new(cfg.max_line),
            server_lines: LineSplitter::new(cfg.max_line),
            client_mode: if implicit_tls {
                ClientMode::TlsExpect
            } else {
                ClientMode::Command
            },
            server_mode: if implicit_tls {
                ServerMode::TlsExpect
            } else {
                ServerMode::Reply
            },
            pending: VecDeque::new(),
            greeting_done: false,
            server_spoke: false,
            client_spoke: false,
            reply: ReplyInProgress::default(),
            held: Vec::new(),
            sasl_lines: 0,
            body_tail: [0; 4],
            body_tail_len: 0,
            tls_client: RecordScanner::new(true),
            tls_server: RecordScanner::new(false),
            tls_history: Vec::new(),
            scratch: Vec::new(),
            first: [Opening::default(); 2],
            client_opening_decided: false,
            tls_lost_to_gap: false,
            facts: SessionFacts::default(),
        };
        if implicit_tls {
            s.facts.implicit_tls = true;
            s.facts.tls_expected = true;
        }
        s
    }

    /// The one place the client's mode changes after construction. `why` is what was seen on
    /// the wire; the hook for a trace of transitions goes here. Entering the body also starts
    /// the search for its terminator, whichever of the four ways it was entered.
    fn set_client_mode(&mut self, to: ClientMode, why: Transition) {
        debug_assert!(
            client_step_allowed(self.client_mode, to, why),
            "client {:?} -> {:?} for {:?}",
            self.client_mode,
            to,
            why
        );
        if to == ClientMode::DataBody && self.client_mode != ClientMode::DataBody {
            // A body begins right after the DATA line (or the 354), so a terminator `.\r\n` at
            // its very start ends it: prime the tail as if a line end had just been seen.
            self.body_tail = *b"\0\0\r\n";
            self.body_tail_len = 4;
        }
        self.client_mode = to;
    }

    /// The one place the server's mode changes after construction. `why` is what was seen on
    /// the wire; the hook for a trace of transitions goes here.
    fn set_server_mode(&mut self, to: ServerMode, why: Transition) {
        debug_assert!(
            server_step_allowed(self.server_mode, to, why),
            "server {:?} -> {:?} for {:?}",
            self.server_mode,
            to,
            why
        );
        self.server_mode = to;
    }

    /// Whether the reassembler should keep recent bytes of this side for overlap comparison:
    /// only while the side carries the cleartext dialog.
    pub fn dialog_phase(&self, side: Side) -> bool {
        match side {
            Side::Client => matches!(
                self.client_mode,
                ClientMode::Command | ClientMode::DataPending
            ),
            Side::Server => self.server_mode == ServerMode::Reply,
        }
    }

    /// Whether bytes of this side can still change any fact. When both are false the flow only
    /// needs its TCP flags watched.
    pub fn wants_bytes(&self, side: Side) -> bool {
        match side {
            Side::Client => self.client_mode != ClientMode::Ignore,
            Side::Server => self.server_mode != ServerMode::Ignore,
        }
    }

    /// Handles one reassembly event of one side.
    pub fn on_stream(&mut self, side: Side, event: StreamEvent<'_>, ts_us: i64) {
        match event {
            StreamEvent::Data { bytes, .. } => match side {
                Side::Client => self.client_bytes(bytes, ts_us),
                Side::Server => self.server_bytes(bytes, ts_us),
            },
            StreamEvent::Gap { len, .. } => self.gap(side, len),
            StreamEvent::Conflict(conflict) => {
                if self.facts.conflicts.len() < MAX_EVENTS {
                    self.facts.conflicts.push(TimedConflict {
                        side,
                        ts_us,
                        conflict,
                    });
                } else {
                    self.facts.conflicts_dropped += 1;
                }
            }
        }
    }

    fn gap(&mut self, side: Side, len: u64) {
        match side {
            Side::Client => match self.client_mode {
                ClientMode::Command | ClientMode::DataPending => {
                    self.facts.dialog_gaps += 1;
                    self.client_lines.reset();
                }
                ClientMode::Bdat(left) if len < left => {
                    self.set_client_mode(ClientMode::Bdat(left - len), Transition::GapInChunk)
                }
                ClientMode::Bdat(_) => {
                    self.facts.dialog_gaps += 1;
                    self.client_lines.reset();
                    self.set_client_mode(ClientMode::Command, Transition::GapPastChunk);
                }
                // A hole in a body may have swallowed the terminator; the server's next reply
                // will tell (see `server_reply`).
                ClientMode::DataBody => self.body_tail_len = 0,
                ClientMode::TlsExpect | ClientMode::Tls => {
                    self.tls_lost_to_gap = true;
                    self.facts.dialog_gaps += u32::from(self.client_mode == ClientMode::TlsExpect);
                    self.set_client_mode(ClientMode::Ignore, Transition::GapInTls);
                }
                ClientMode::Ignore => {}
            },
            Side::Server => match self.server_mode {
                ServerMode::Reply => {
                    self.facts.dialog_gaps += 1;
                    // A reply was under way: its end is in the hole, so the command it answers
                    // got its answer, unseen. Left pending, that command would take the next
                    // reply, and a frame cut by the snap length inside an EHLO reply would make
                    // the 220 to STARTTLS look like an EHLO reply without STARTTLS.
                    if self.reply.code.is_some() || self.server_lines.has_partial() {
                        self.pending.pop_front();
                    }
                    self.server_lines.reset();
                    self.reply.clear();
                }
                ServerMode::TlsExpect | ServerMode::Tls => {
                    self.tls_lost_to_gap = true;
                    self.facts.dialog_gaps += u32::from(self.server_mode == ServerMode::TlsExpect);
                    self.set_server_mode(ServerMode::Ignore, Transition::GapInTls);
                }
                ServerMode::Ignore => {}
            },
        }
    }

    fn client_bytes(&mut self, mut bytes: &[u8], ts_us: i64) {
        self.client_spoke |= !bytes.is_empty();
        while !bytes.is_empty() {
            match self.client_mode {
                ClientMode::Command => {
                    if !self.client_opening_decided {
                        // The client's first bytes: a TLS record (implicit TLS) or a command?
                        // Decided on the same five bytes however they were segmented.
                        let Some((head, rest)) = gather_first(&mut self.first[0], bytes) else {
                            return;
                        };
                        self.client_opening_decided = true;
                        if self.facts.commands == 0 && record::looks_like_tls(&head) {
                            self.client_speaks_tls_first();
                        }
                        self.client_bytes(&head, ts_us);
                        bytes = rest;
                        continue;
                    }
                    if !self.server_spoke
                        && self.pending.back() == Some(&Verb::Starttls)
                        && !self.client_lines.has_partial()
                        && record::looks_like_tls(bytes)
                    {
                        // A one-sided capture: the 220 to STARTTLS went by unseen, and the
                        // client started TLS.
                        self.facts.tls_expected = true;
                        self.facts.tls_started = true;
                        self.pending.clear();
                        self.set_client_mode(ClientMode::Tls, Transition::TlsWithoutServerSide);
                        continue;
                    }
                    let Some(line) = self.client_lines.next_line(bytes) else {
                        return;
                    };
                    let consumed = line.consumed;
                    if line.overlong {
                        self.facts.overlong_lines += 1;
                    }
                    // Copy out of the splitter's borrow into a reused buffer: no allocation.
                    let mut text = std::mem::take(&mut self.scratch);
                    text.clear();
                    text.extend_from_slice(line.bytes);
                    bytes = &bytes[consumed..];
                    self.client_line(&text, ts_us);
                    self.scratch = text;
                }
                ClientMode::DataPending => {
                    let room = self.cfg.max_held.saturating_sub(self.held.len());
                    if bytes.len() > room {
                        // The client is not waiting for 354: it must be sending the body.
                        let held = std::mem::take(&mut self.held);
                        self.set_client_mode(ClientMode::DataBody, Transition::BodyWithout354);
                        self.client_bytes(&held, ts_us);
                        continue;
                    }
                    self.held.extend_from_slice(bytes);
                    return;
                }
                ClientMode::DataBody => match self.find_body_end(bytes) {
                    Some(end) => {
                        bytes = &bytes[end..];
                        self.set_client_mode(ClientMode::Command, Transition::BodyEnded);
                        self.client_lines.reset();
                    }
                    None => return,
                },
                ClientMode::Bdat(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    if n == left {
                        self.set_client_mode(ClientMode::Command, Transition::BdatChunkDone);
                    } else {
                        self.set_client_mode(ClientMode::Bdat(left - n), Transition::BdatBytes);
                    }
                }
                ClientMode::TlsExpect => {
                    let Some((head, rest)) = gather_first(&mut self.first[0], bytes) else {
                        return;
                    };
                    self.client_first_after_220(&head, ts_us);
                    if self.client_mode == ClientMode::TlsExpect {
                        self.set_client_mode(ClientMode::Ignore, Transition::OpeningUndecided);
                    }
                    self.client_bytes(&head, ts_us);
                    bytes = rest;
                }
                ClientMode::Tls => {
                    self.tls_client.feed(bytes, &mut self.tls_history);
                    self.facts.tls_client = self.tls_client.summary;
                    if self.tls_client.summary.malformed {
                        self.set_client_mode(ClientMode::Ignore, Transition::TlsMalformed);
                    } else if self.tls_client.summary.application_data
                        && self.tls_server.summary.application_data
                    {
                        self.set_client_mode(ClientMode::Ignore, Transition::BothSidesEncrypted);
                    }
                    return;
                }
                ClientMode::Ignore => return,
            }
        }
    }

    /// Finds the end of a DATA body (CRLF.CRLF, the body starting at a line start). Returns the
    /// number of bytes of `bytes` up to and including the terminator.
    fn find_body_end(&mut self, bytes: &[u8]) -> Option<usize> {
        const END: &[u8] = b"\r\n.\r\n";
        // A terminator that straddles the previous chunk and this one.
        let mut joint = [0u8; 8];
        let tail = &self.body_tail[4 - self.body_tail_len..];
        joint[..tail.len()].copy_from_slice(tail);
        let head = bytes.len().min(4);
        joint[tail.len()..tail.len() + head].copy_from_slice(&bytes[..head]);
        let joint = &joint[..tail.len() + head];
        if let Some(pos) = memchr::memmem::find(joint, END)
            && pos + END.len() > tail.len()
        {
            return Some(pos + END.len() - tail.len());
        }
        if let Some(pos) = memchr::memmem::find(bytes, END) {
            return Some(pos + END.len());
        }
        // Keep the last four bytes for the next chunk.
        if bytes.len() >= 4 {
            self.body_tail.copy_from_slice(&bytes[bytes.len() - 4..]);
            self.body_tail_len = 4;
        } else {
            let keep = (self.body_tail_len + bytes.len()).min(4);
            let mut joined = [0u8; 8];
            let prev = &self.body_tail[4 - self.body_tail_len..];
            joined[..prev.len()].copy_from_slice(prev);
            joined[prev.len()..prev.len() + bytes.len()].copy_from_slice(bytes);
            let total = prev.len() + bytes.len();
            self.body_tail[4 - keep..].copy_from_slice(&joined[total - keep..total]);
            self.body_tail_len = keep;
        }
        None
    }

    fn client_line(&mut self, line: &[u8], ts_us: i64) {
        if self.sasl_lines > 0 {
            // A SASL response: opaque, possibly a credential. Never parsed or kept.
            self.sasl_lines -= 1;
            sasl::on_response(&mut self.facts.cleartext_auth, line);
            return;
        }
        if line.is_empty() {
            return;
        }
        let Some(cmd) = reply::parse_command(line) else {
            self.facts.malformed_lines += 1;
            if !self.facts.recognised && crate::tls::record::looks_like_tls(line) {
                self.set_client_mode(ClientMode::Ignore, Transition::TlsLineBeforeSmtp);
            }
            return;
        };
        self.facts.recognised = true;
        self.facts.commands += 1;
        if self.pending.contains(&Verb::Starttls) && self.facts.cleartext.len() < MAX_EVENTS {
            // RFC 3207 §5: nothing may follow STARTTLS before the 220. A pipelined command here
            // is executed by a vulnerable server as if it came inside TLS.
            self.facts.cleartext.push(CleartextEvent {
                side: Side::Client,
                phase: "after-starttls",
                what: reply::verb_text(line),
                bytes: line.len() + 2,
                ts_us,
            });
        }
        match cmd.verb {
            Verb::Ehlo | Verb::Helo => {
                if self.facts.greeting_verb.is_none() {
                    self.facts.greeting_verb = Some(cmd.verb);
                    let (name, cut) = bounded_text(cmd.args, MAX_EHLO_NAME);
                    self.facts.ehlo_name = Some(name);
                    if cut {
                        self.facts.mark_truncated("ehlo_name");
                    }
                }
            }
            Verb::Starttls => {
                self.facts.starttls_sent = true;
                self.facts.starttls_ts.get_or_insert(ts_us);
            }
            Verb::Mail => {
                self.facts.mail_transactions += 1;
                if self.cfg.log_envelope {
                    self.keep_envelope(Verb::Mail, cmd.args);
                }
            }
            Verb::Rcpt => {
                self.facts.rcpt_commands += 1;
                if self.cfg.log_envelope {
                    self.keep_envelope(Verb::Rcpt, cmd.args);
                }
            }
            Verb::Data => {
                self.facts.data_commands += 1;
                if self.server_spoke {
                    self.set_client_mode(ClientMode::DataPending, Transition::DataSent);
                } else {
                    // Nothing of the server was ever seen, not even its greeting: the capture
                    // shows one direction only (asymmetric routing, a one-way tap), so no 354
                    // will come to wait for. What follows DATA is the body.
                    self.set_client_mode(ClientMode::DataBody, Transition::DataWithoutServerSide);
                }
            }
            Verb::Bdat => {
                self.facts.bdat_commands += 1;
                match reply::parse_bdat(cmd.args) {
                    Some((0, _)) => {}
                    Some((size, _)) => {
                        self.set_client_mode(ClientMode::Bdat(size), Transition::BdatSent)
                    }
                    None => self.facts.malformed_lines += 1,
                }
            }
            Verb::Auth => {
                self.facts.auth_commands += 1;
                sasl::on_command(&mut self.facts.cleartext_auth, cmd.args, ts_us);
            }
            Verb::Quit => self.facts.quit_sent = true,
            Verb::Rset | Verb::Other => {}
        }
        if self.pending.len() >= self.cfg.max_pending {
            self.pending.pop_front();
        }
        self.pending.push_back(cmd.verb);
    }

    /// Keeps the envelope address of a MAIL or RCPT command (only with `log_envelope`), and
    /// notes a list or an address cut at its limit.
    fn keep_envelope(&mut self, verb: Verb, args: &[u8]) {
        let (field, list) = match verb {
            Verb::Mail => ("mail_from", &mut self.facts.mail_from),
            _ => ("rcpt_to", &mut self.facts.rcpt_to),
        };
        if list.len() >= MAX_ENVELOPE {
            self.facts.mark_truncated(field);
            return;
        }
        let (address, cut) = envelope_address(args);
        list.push(address);
        if cut {
            self.facts.mark_truncated(field);
        }
    }

    /// The client opened with TLS where SMTP was expected: implicit TLS on a port not configured
    /// for it (587 submission servers often do this), or a client trying TLS against a server
    /// that greeted in cleartext (which then cannot complete the handshake).
    fn client_speaks_tls_first(&mut self) {
        self.facts.implicit_tls = true;
        self.facts.tls_expected = true;
        self.set_client_mode(ClientMode::TlsExpect, Transition::ClientOpenedWithTls);
        if self.greeting_done {
            self.facts.handshake_failure = Some(HandshakeFailure::NonTlsServerBytes);
        } else if self.server_mode == ServerMode::Reply && !self.server_lines.has_partial() {
            self.set_server_mode(ServerMode::TlsExpect, Transition::ClientOpenedWithTls);
        }
    }

    fn client_first_after_220(&mut self, bytes: &[u8], ts_us: i64) {
        if record::looks_like_tls(bytes) {
            self.facts.tls_started = true;
            self.facts.recognised = true;
            self.set_client_mode(ClientMode::Tls, Transition::TlsStarted);
            return;
        }
        if reply::parse_command(bytes.split(|b| *b == b'\n').next().unwrap_or(bytes)).is_some() {
            if !self.facts.implicit_tls {
                // Cleartext commands where the handshake should be: the session goes on in the
                // clear (a decrypting middlebox, a broken client, or an injection).
                if self.facts.cleartext.len() < MAX_EVENTS {
                    let first = bytes.split(|b| *b == b'\n').next().unwrap_or(bytes);
                    self.facts.cleartext.push(CleartextEvent {
                        side: Side::Client,
                        phase: "after-220",
                        what: reply::verb_text(first),
                        bytes: bytes.len(),
                        ts_us,
                    });
                }
            } else {
                // SMTP on an implicit-TLS port in the clear: it is a plaintext session.
                self.facts.implicit_tls = false;
                self.facts.tls_expected = false;
            }
            self.set_client_mode(ClientMode::Command, Transition::CommandInsteadOfTls);
            if matches!(self.server_mode, ServerMode::TlsExpect) {
                self.set_server_mode(ServerMode::Reply, Transition::CommandInsteadOfTls);
            }
            return;
        }
        if self.facts.tls_expected && !self.facts.implicit_tls {
            self.facts.handshake_failure = Some(HandshakeFailure::NonTlsClientBytes);
        }
        self.set_client_mode(ClientMode::Ignore, Transition::NeitherTlsNorSmtp);
    }

    fn server_bytes(&mut self, mut bytes: &[u8], ts_us: i64) {
        self.server_spoke |= !bytes.is_empty();
        while !bytes.is_empty() {
            match self.server_mode {
                ServerMode::Reply => {
                    let Some(line) = self.server_lines.next_line(bytes) else {
                        return;
                    };
                    let consumed = line.consumed;
                    if line.overlong {
                        self.facts.overlong_lines += 1;
                        self.reply.cut = true;
                    }
                    let mut text = std::mem::take(&mut self.scratch);
                    text.clear();
                    text.extend_from_slice(line.bytes);
                    bytes = &bytes[consumed..];
                    self.server_line(&text, ts_us);
                    self.scratch = text;
                }
                ServerMode::TlsExpect => {
                    let Some((head, rest)) = gather_first(&mut self.first[1], bytes) else {
                        return;
                    };
                    self.server_first_after_220(&head, ts_us);
                    self.server_bytes(&head, ts_us);
                    bytes = rest;
                }
                ServerMode::Tls => {
                    self.tls_server.feed(bytes, &mut self.tls_history);
                    self.facts.tls_server = self.tls_server.summary;
                    let s = self.tls_server.summary;
                    if s.alert.is_some()
                        && !s.server_hello
                        && self.facts.handshake_failure.is_none()
                    {
                        self.facts.handshake_failure = Some(HandshakeFailure::Alert);
                    }
                    if s.malformed {
                        self.set_server_mode(ServerMode::Ignore, Transition::TlsMalformed);
                    } else if s.application_data && self.tls_client.summary.application_data {
                        self.set_server_mode(ServerMode::Ignore, Transition::BothSidesEncrypted);
                    }
                    return;
                }
                ServerMode::Ignore => return,
            }
        }
    }

    /// Decides what the server's first bytes after the 220 (or on an implicit-TLS port) are.
    fn server_first_after_220(&mut self, head: &[u8], ts_us: i64) {
        if record::looks_like_tls(head) {
            self.facts.recognised = true;
            self.set_server_mode(ServerMode::Tls, Transition::TlsStarted);
            return;
        }
        let first = head.split(|b| *b == b'\n').next().unwrap_or(head);
        if reply::parse_reply_line(first).is_some() {
            self.facts.recognised = true;
            if self.facts.implicit_tls {
                if self.tls_client.summary.client_hello {
                    // A ClientHello answered by an SMTP banner.
                    self.facts.handshake_failure = Some(HandshakeFailure::NonTlsServerBytes);
                }
                self.facts.implicit_tls = self.tls_client.summary.client_hello;
                self.facts.tls_expected = self.facts.implicit_tls;
                if self.client_mode == ClientMode::TlsExpect {
                    self.set_client_mode(ClientMode::Command, Transition::ReplyInsteadOfTls);
                    let held = std::mem::take(&mut self.first[0]);
                    if !held.is_empty() {
                        self.client_bytes(&held, ts_us);
                    }
                }
            } else if self.facts.tls_started {
                // The client's ClientHello came first: this line answers it (a server or a box
                // on the path that refuses TLS with `421 …`). That is the handshake's failure,
                // not cleartext in the injection window, which closes at the ClientHello.
                if self.facts.handshake_failure.is_none() {
                    self.facts.handshake_failure = Some(HandshakeFailure::NonTlsServerBytes);
                }
            } else if self.facts.cleartext.len() < MAX_EVENTS {
                self.facts.cleartext.push(CleartextEvent {
                    side: Side::Server,
                    phase: "after-220",
                    what: reply::verb_text(first),
                    bytes: head.len(),
                    ts_us,
                });
            }
            self.set_server_mode(ServerMode::Reply, Transition::ReplyInsteadOfTls);
            return;
        }
        if self.facts.tls_expected && self.facts.handshake_failure.is_none() {
            self.facts.handshake_failure = Some(HandshakeFailure::NonTlsServerBytes);
        }
        self.set_server_mode(ServerMode::Ignore, Transition::NeitherTlsNorSmtp);
    }

    fn server_line(&mut self, line: &[u8], ts_us: i64) {
        let Some(parsed) = reply::parse_reply_line(line) else {
            if !line.is_empty() {
                self.facts.malformed_lines += 1;
            }
            if !self.facts.recognised && record::looks_like_tls(line) {
                self.set_server_mode(ServerMode::Ignore, Transition::TlsLineBeforeSmtp);
            }
            return;
        };
        self.facts.recognised = true;
        if self.reply.code.is_none() {
            let for_verb = self.pending.front().copied();
            self.reply.code = Some(parsed.code);
            // Lines are kept for the greeting, EHLO and STARTTLS, and for any reply while the
            // client is unseen (`unseen_command` reads their shape).
            self.reply.keep_lines = !self.greeting_done
                || matches!(for_verb, Some(Verb::Ehlo) | Some(Verb::Starttls))
                || (for_verb.is_none() && !self.client_spoke);
        }
        if self.reply.keep_lines && self.reply.lines.len() <= self.cfg.max_capabilities {
            // Kept as bytes, bounded as `printable` bounds them; text is made only for what a
            // fact keeps (`server_reply`).
            let text = &parsed.text[..parsed.text.len().min(self.cfg.max_line)];
            self.reply.lines.push(text);
        } else if self.reply.keep_lines {
            self.facts.ehlo_capabilities_dropped += 1;
            self.reply.cut = true;
        }
        if parsed.more {
            return;
        }
        let code = self.reply.code.unwrap_or(parsed.code);
        let cut = self.reply.cut;
        // The lines leave `self.reply` for the call (which may feed held client bytes through
        // the session) and come back cleared, so their buffers serve the next reply.
        let mut lines = std::mem::take(&mut self.reply.lines);
        self.reply.clear();
        self.facts.replies += 1;
        self.server_reply(code, &lines, cut, ts_us);
        lines.clear();
        if self.reply.lines.is_empty() {
            self.reply.lines = lines;
        }
    }

    /// Handles one complete reply; `cut` says a kept line of it was cut at a limit.
    fn server_reply(&mut self, code: u16, lines: &ReplyLines, cut: bool, ts_us: i64) {
        if !self.greeting_done {
            self.greeting_done = true;
            self.facts.banner_code = Some(code);
            if cut {
                self.facts.mark_truncated("banner");
            }
            if let Some(first) = lines.first() {
                let first = printable(first, self.cfg.max_line);
                self.facts.banner_masked = capability::is_masked_banner(&first);
                self.facts.banner = Some(first);
            }
            return;
        }
        if self.client_mode == ClientMode::DataBody {
            // The server answered while we thought the body went on: its end fell into a hole.
            self.set_client_mode(ClientMode::Command, Transition::ReplyDuringBody);
            self.client_lines.reset();
        }
        let Some(verb) = self
            .pending
            .pop_front()
            .or_else(|| self.unseen_command(code, lines))
        else {
            self.facts.unmatched_replies += 1;
            return;
        };
        match verb {
            Verb::Ehlo if self.facts.ehlo_reply_code.is_none() => {
                self.facts.ehlo_reply_code = Some(code);
                if (200..300).contains(&code) {
                    if cut {
                        self.facts.mark_truncated("ehlo_capabilities");
                    }
                    self.ehlo_reply(lines, ts_us);
                } else {
                    self.facts.ehlo_reply_ts = Some(ts_us);
                }
            }
            Verb::Starttls => {
                if self.facts.starttls_reply_code.is_none() {
                    self.facts.starttls_reply_code = Some(code);
                    self.facts.starttls_reply_text =
                        lines.first().map(|l| printable(l, self.cfg.max_line));
                    if cut {
                        self.facts.mark_truncated("starttls_reply_text");
                    }
                }
                if code == 220 {
                    self.facts.tls_expected = true;
                    self.set_server_mode(ServerMode::TlsExpect, Transition::StarttlsAccepted);
                    // Commands pipelined after STARTTLS were consumed by the server in the
                    // clear; their replies (if any) are now inside TLS.
                    self.pending.clear();
                    if self.client_mode == ClientMode::Command {
                        self.set_client_mode(ClientMode::TlsExpect, Transition::StarttlsAccepted);
                        self.client_lines.reset();
                    }
                }
            }
            Verb::Data => {
                let held = std::mem::take(&mut self.held);
                if code == 354 {
                    // The reply to the end of the body is still owed.
                    self.pending.push_front(Verb::Data);
                    self.set_client_mode(ClientMode::DataBody, Transition::DataAccepted);
                } else if self.client_mode == ClientMode::DataPending {
                    self.set_client_mode(ClientMode::Command, Transition::DataRefused);
                }
                if !held.is_empty() {
                    self.client_bytes(&held, ts_us);
                }
            }
            Verb::Auth if code == 334 => {
                self.sasl_lines += 1;
                self.pending.push_front(Verb::Auth);
            }
            Verb::Auth => sasl::on_reply(&mut self.facts.cleartext_auth, code),
            _ => {}
        }
    }

    /// The command a reply answers when the capture shows none of the client (a server-only
    /// capture: asymmetric routing, a one-way tap). Only what the reply's shape proves: the first
    /// multi-line `250` after the greeting is the EHLO reply (its capabilities are where a
    /// stripped STARTTLS shows), and a `220` to an EHLO that offered STARTTLS is its acceptance
    /// (what follows is the server's TLS). Anything else stays unmatched.
    fn unseen_command(&self, code: u16, lines: &ReplyLines) -> Option<Verb> {
        if self.client_spoke {
            return None;
        }
        if self.facts.ehlo_reply_code.is_none() && code == 250 && lines.len() > 1 {
            Some(Verb::Ehlo)
        } else if self.facts.starttls_offered
            && self.facts.starttls_reply_code.is_none()
            && code == 220
        {
            Some(Verb::Starttls)
        } else {
            None
        }
    }

    fn ehlo_reply(&mut self, lines: &ReplyLines, ts_us: i64) {
        self.facts.ehlo_reply_seen = true;
        self.facts.ehlo_reply_ts = Some(ts_us);
        let max = self.cfg.max_line;
        let mut lines = lines.iter().map(|l| printable(l, max));
        self.facts.ehlo_reply_name = lines.next();
        // Called once per session (the first EHLO reply), so the list is sized exactly.
        self.facts.ehlo_capabilities.reserve_exact(lines.len());
        for cap in lines {
            match capability::classify(capability::keyword(&cap)) {
                TokenClass::Starttls => self.facts.starttls_offered = true,
                class if class.is_overwrite() => {
                    self.facts.overwritten_tokens.push(OverwrittenToken {
                        line: cap.clone(),
                        class,
                    });
                }
                _ => {}
            }
            self.facts.ehlo_capabilities.push(cap);
        }
    }

    /// True when both sides got through the handshake: ChangeCipherSpec and Finished each way
    /// (TLS 1.2 and earlier), or encrypted records each way after a TLS 1.3 ServerHello.
    fn handshake_completed(&self) -> bool {
        let (c, s) = (&self.tls_client.summary, &self.tls_server.summary);
        if !self.server_spoke {
            // One-sided capture: a client sends application data (or, in TLS 1.3, its
            // encrypted Finished) only after the server's whole flight.
            return self.facts.tls_started && c.application_data;
        }
        if !s.server_hello {
            return false;
        }
        let tls13 = self.tls_server.handshake.info.version == Some(0x0304);
        if tls13 {
            c.application_data && s.application_data
        } else {
            (c.finished && s.finished) || (c.application_data && s.application_data)
        }
    }

    /// Closes the session: whatever the upgrade was waiting for will not come.
    pub fn finish(&mut self, end: EndReason) {
        if self.client_mode == ClientMode::DataPending && !self.held.is_empty() {
            // No 354 came (a one-sided capture, or the flow ended): what the client sent after
            // DATA is the body and the commands after it, not something to drop.
            let held = std::mem::take(&mut self.held);
            self.set_client_mode(ClientMode::DataBody, Transition::EndedWaitingFor354);
            let ts = self.facts.ehlo_reply_ts.unwrap_or(0);
            self.client_bytes(&held, ts);
        }
        // A flow that ended before five bytes arrived: decide on what there is.
        let ts = self.facts.ehlo_reply_ts.unwrap_or(0);
        let head = std::mem::take(&mut self.first[0]);
        if !head.is_empty() && self.client_mode == ClientMode::TlsExpect {
            self.client_first_after_220(&head, ts);
            self.client_bytes(&head, ts);
        } else if !head.is_empty() && self.client_mode == ClientMode::Command {
            self.client_opening_decided = true;
            if self.facts.commands == 0 && record::looks_like_tls(&head) {
                self.client_speaks_tls_first();
            }
            self.client_bytes(&head, ts);
        }
        let head = std::mem::take(&mut self.first[1]);
        if !head.is_empty() && self.server_mode == ServerMode::TlsExpect {
            self.server_first_after_220(&head, ts);
            self.server_bytes(&head, ts);
        }
        self.facts.tls_client = self.tls_client.summary;
        self.facts.tls_server = self.tls_server.summary;
        self.facts.tls_handshake_completed = self.handshake_completed();
        self.facts.tls_client_hello_info = std::mem::take(&mut self.tls_client.handshake.info);
        self.facts.tls_server_hello_info = std::mem::take(&mut self.tls_server.handshake.info);
        // The letters are ASCII (`push_letter`): the buffer becomes the string without a copy.
        self.facts.tls_history = String::from_utf8(std::mem::take(&mut self.tls_history))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if !self.facts.tls_expected || self.facts.handshake_failure.is_some() {
            return;
        }
        if self.facts.tls_handshake_completed || self.tls_lost_to_gap {
            return;
        }
        if self.tls_server.summary.server_hello {
            // The hellos were exchanged but the handshake did not finish: an alert from either
            // side, or the connection ended in the middle.
            let alert =
                self.tls_server.summary.alert.is_some() || self.tls_client.summary.alert.is_some();
            self.facts.handshake_failure = match end {
                _ if alert => Some(HandshakeFailure::Alert),
                EndReason::Reset => Some(HandshakeFailure::Reset),
                EndReason::Fin => Some(HandshakeFailure::Closed),
                EndReason::Timeout => Some(HandshakeFailure::Stalled),
                EndReason::CaptureEnd | EndReason::Evicted => None,
            };
            return;
        }
        let failure = match end {
            EndReason::CaptureEnd => None,
            _ if !self.facts.tls_started && !self.tls_client.summary.client_hello => match end {
                EndReason::Timeout => Some(HandshakeFailure::Stalled),
                EndReason::Evicted => None,
                _ => Some(HandshakeFailure::NoClientHello),
            },
            EndReason::Reset => Some(HandshakeFailure::Reset),
            EndReason::Fin => Some(HandshakeFailure::Closed),
            EndReason::Timeout => Some(HandshakeFailure::Stalled),
            EndReason::Evicted => None,
        };
        // On an implicit-TLS port a flow that never showed TLS or SMTP is not a failed upgrade.
        if self.facts.implicit_tls && !self.facts.recognised {
            return;
        }
        self.facts.handshake_failure = failure;
    }
}

/// How many first bytes after a switch of mode decide "TLS record or SMTP line?".
const OPENING: usize = 5;

/// The first bytes after a switch of mode, at most [`OPENING`] of them, held inline: they are
/// gathered a few times per session, and a heap buffer for five bytes cost an allocation each.
#[derive(Clone, Copy, Debug, Default)]
struct Opening {
    buf: [u8; OPENING],
    len: usize,
}

impl std::ops::Deref for Opening {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Collects the first bytes after a switch of mode until there are five of them or a line end,
/// so that "TLS record or SMTP line?" is decided on the same bytes however they were segmented.
/// Returns the collected head and the unconsumed rest once it is decided.
fn gather_first<'a>(buf: &mut Opening, bytes: &'a [u8]) -> Option<(Opening, &'a [u8])> {
    let mut i = 0;
    while buf.len < OPENING && i < bytes.len() {
        buf.buf[buf.len] = bytes[i];
        buf.len += 1;
        i += 1;
        if bytes[i - 1] == b'\n' {
            break;
        }
    }
    if buf.len >= OPENING || buf.last() == Some(&b'\n') {
        Some((std::mem::take(buf), &bytes[i..]))
    } else {
        None
    }
}

/// Lossy, bounded text for evidence: control characters are escaped so that a hostile server
/// cannot smuggle terminal escapes into a report.
fn printable(bytes: &[u8], max: usize) -> String {
    bounded_text(bytes, max).0
}

/// `printable`, and whether the bytes were cut at `max`.
fn bounded_text(bytes: &[u8], max: usize) -> (String, bool) {
    let cut = bytes.len() > max;
    let bytes = &bytes[..bytes.len().min(max)];
    // Nearly every line is printable ASCII: then the text is the bytes, one copy, without the
    // lossy decoding and the per-character control scan below (same result, a tenth the work).
    if is_printable_ascii(bytes)
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        return (text.to_owned(), cut);
    }
    let text = String::from_utf8_lossy(bytes);
    let text = if text.chars().any(|c| c.is_control()) {
        text.chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect()
    } else {
        text.into_owned()
    };
    (text, cut)
}

/// True when every byte is printable ASCII (space to `~`): such bytes are valid UTF-8 with no
/// control character. Written as a fold without early exit so that it runs in vector steps.
fn is_printable_ascii(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(true, |ok, &b| ok & (0x20..0x7f).contains(&b))
}

/// The address inside `FROM:<...>` / `TO:<...>`, bounded.
/// Also when a lenient client leaves out the brackets (`MAIL FROM: a@b`, which Zeek's test traces
/// show): then the address is the first word after the colon. Returns whether it was cut.
fn envelope_address(args: &[u8]) -> (String, bool) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    // The `FROM` / `TO` keyword, an optional colon, blanks.
    let keyword = args
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(args.len());
    let rest = &args[keyword..];
    let rest = &rest[rest.iter().take_while(|b| blank(b)).count()..];
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    let rest = &rest[rest.iter().take_while(|b| blank(b)).count()..];
    let path = match rest.strip_prefix(b"<") {
        Some(inner) => &inner[..inner.iter().position(|b| *b == b'>').unwrap_or(inner.len())],
        None => &rest[..rest.iter().position(blank).unwrap_or(rest.len())],
    };
    bounded_text(path, MAX_ADDRESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays a dialog: each step is (side, bytes).
    fn play(steps: &[(Side, &[u8])]) -> SmtpSession {
        play_with(SmtpConfig::default(), steps)
    }

    /// `play` with other limits.
    fn play_with(cfg: SmtpConfig, steps: &[(Side, &[u8])]) -> SmtpSession {
        let mut s = SmtpSession::new(cfg, false);
        let mut offsets = [0u64; 2];
        for (i, (side, bytes)) in steps.iter().enumerate() {
            let k = usize::from(*side == Side::Server);
            s.on_stream(
                *side,
                StreamEvent::Data {
                    offset: offsets[k],
                    bytes,
                },
                i as i64,
            );
            offsets[k] += bytes.len() as u64;
        }
        s
    }

    use Side::{Client as C, Server as S};

    #[test]
    fn a_reply_cut_by_a_hole_answers_its_command_not_the_next() {
        // The EHLO reply as a snap length of 96 leaves it: 30 bytes, then a hole; the client
        // already sent STARTTLS when the 220 shows the hole.
        let mut s = SmtpSession::new(SmtpConfig::default(), false);
        let data = |s: &mut SmtpSession, side: Side, offset: u64, bytes: &[u8]| {
            s.on_stream(side, StreamEvent::Data { offset, bytes }, 0);
        };
        let cut: &[u8] = b"250-mx.swcap.test\r\n250-PIPELI";
        let (banner, ehlo): (&[u8], &[u8]) = (
            b"220 mx.swcap.test ESMTP\r\n",
            b"EHLO client.swcap.test\r\n",
        );
        data(&mut s, S, 0, banner);
        data(&mut s, C, 0, ehlo);
        data(&mut s, S, banner.len() as u64, cut);
        data(&mut s, C, ehlo.len() as u64, b"STARTTLS\r\n");
        let hole_at = (banner.len() + cut.len()) as u64;
        let len = 120;
        s.on_stream(
            S,
            StreamEvent::Gap {
                offset: hole_at,
                len,
            },
            0,
        );
        data(
            &mut s,
            S,
            hole_at + len,
            b"220 2.0.0 Ready to start TLS\r\n",
        );
        let f = &s.facts;
        assert_eq!(f.ehlo_reply_code, None, "the cut reply is no EHLO reply");
        assert!(!f.ehlo_reply_seen && !f.starttls_offered);
        assert_eq!(f.starttls_reply_code, Some(220));
        assert!(f.tls_expected);
        assert_eq!(f.dialog_gaps, 1);
        // The server's first TLS record is cut too: how the handshake went cannot be seen, so
        // the reset that ends the connection is no handshake failure.
        let tls_at = hole_at + len + 30;
        data(
            &mut s,
            S,
            tls_at,
            &[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00],
        );
        s.on_stream(
            S,
            StreamEvent::Gap {
                offset: tls_at + 7,
                len: 500,
            },
            0,
        );
        s.finish(EndReason::Reset);
        assert_eq!(s.facts.handshake_failure, None);
        assert!(!s.facts.tls_handshake_completed);
    }

    #[test]
    fn stripped_token_and_masked_banner() {
        let s = play(&[
            (S, b"220 ******************************\r\n"),
            (C, b"EHLO client.example\r\n"),
            (
                S,
                b"250-mx.example\r\n250-PIPELINING\r\n250-XXXXXXXA\r\n250 8BITMIME\r\n",
            ),
            (C, b"MAIL FROM:<a@example>\r\n"),
        ]);
        let f = &s.facts;
        assert!(f.banner_masked);
        assert!(!f.starttls_offered);
        assert_eq!(f.overwritten_tokens.len(), 1);
        assert_eq!(f.overwritten_tokens[0].class, TokenClass::Masked);
        assert_eq!(f.ehlo_capabilities, ["PIPELINING", "XXXXXXXA", "8BITMIME"]);
        assert_eq!(f.mail_transactions, 1);
        assert!(
            f.mail_from.is_empty(),
            "addresses are not kept without log_envelope"
        );
    }

    #[test]
    fn pipelined_command_after_starttls_is_injection() {
        let s = play(&[
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\nRSET\r\n"),
            (S, b"220 go ahead\r\n"),
            (C, &[22, 3, 1, 0, 5, 1, 0, 0, 1, 0]),
            (S, &[22, 3, 3, 0, 4, 2, 0, 0, 0]),
        ]);
        let f = &s.facts;
        assert_eq!(f.cleartext.len(), 1);
        assert_eq!(f.cleartext[0].what, "RSET");
        assert_eq!(f.cleartext[0].phase, "after-starttls");
        assert!(f.tls_started && f.tls_server.server_hello);
    }

    #[test]
    fn bodies_and_chunks_are_skipped_not_parsed() {
        let s = play(&[
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250-CHUNKING\r\n250 STARTTLS\r\n"),
            (C, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
            (S, b"250 ok\r\n250 ok\r\n354 go\r\n"),
            (C, b"STARTTLS\r\nQUIT\r\n.\r"),
            (
                C,
                b"\nMAIL FROM:<e@f>\r\nBDAT 13 LAST\r\nSTARTTLS\r\n.\r\nRSET\r\n",
            ),
            (S, b"250 queued\r\n250 ok\r\n250 ok\r\n250 ok\r\n"),
        ]);
        let f = &s.facts;
        assert!(
            !f.starttls_sent,
            "STARTTLS inside a body or chunk is content"
        );
        assert!(!f.quit_sent);
        assert_eq!(f.mail_transactions, 2);
        assert_eq!(f.bdat_commands, 1);
        assert!(f.starttls_offered);
        assert_eq!(f.unmatched_replies, 0);
    }

    #[test]
    fn late_354_after_the_client_went_on() {
        // The client did not wait for 354: its body overflowed the hold buffer and ended, and a
        // BDAT chunk began before the 354 came. The late 354 starts a body again (the
        // `Bdat -> DataBody` row of `client_step_allowed`, checked in debug builds).
        let cfg = SmtpConfig {
            max_held: 4,
            ..SmtpConfig::default()
        };
        let s = play_with(
            cfg,
            &[
                (S, b"220 mx ESMTP\r\n"),
                (C, b"EHLO c\r\n"),
                (S, b"250 mx\r\n"),
                (C, b"DATA\r\n"),
                (C, b"hello world\r\n.\r\nBDAT 100\r\n"),
                (S, b"354 go\r\n"),
            ],
        );
        assert_eq!(s.facts.data_commands, 1);
        assert_eq!(s.facts.bdat_commands, 1);
        assert_eq!(s.client_mode, ClientMode::DataBody);
    }

    #[test]
    fn one_byte_segments_after_220_do_not_hide_cleartext() {
        let dialog: Vec<(Side, &[u8])> = vec![
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"220 ready\r\n"),
        ];
        let after: Vec<(Side, &[u8])> = vec![(C, b"MAIL FROM:<a@b>\r\n"), (S, b"250 ok\r\n")];
        let whole = {
            let mut steps = dialog.clone();
            steps.extend(after.iter().cloned());
            play(&steps)
        };
        let mut steps = dialog.clone();
        for (side, bytes) in &after {
            for b in bytes.chunks(1) {
                steps.push((*side, b));
            }
        }
        let split = play(&steps);
        for s in [&whole, &split] {
            assert_eq!(s.facts.cleartext.len(), 1, "{:?}", s.facts.cleartext);
            assert_eq!(s.facts.mail_transactions, 1);
            assert_eq!(s.facts.handshake_failure, None);
        }
    }

    #[test]
    fn sasl_lines_are_not_commands() {
        let s = play(&[
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 AUTH LOGIN\r\n"),
            (C, b"AUTH LOGIN\r\n"),
            (S, b"334 VXNlcm5hbWU6\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"334 UGFzc3dvcmQ6\r\n"),
            (C, b"cGFzcw==\r\n"),
            (S, b"235 ok\r\n"),
        ]);
        assert!(
            !s.facts.starttls_sent,
            "a SASL line that reads STARTTLS is not the command"
        );
        assert_eq!(s.facts.auth_commands, 1);
        assert_eq!(s.facts.unmatched_replies, 0);
    }

    #[test]
    fn rejected_starttls_then_cleartext_mail() {
        let s = play(&[
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"500 5.5.1 Command unrecognized\r\n"),
            (C, b"MAIL FROM:<a@b>\r\n"),
        ]);
        assert_eq!(s.facts.starttls_reply_code, Some(500));
        assert!(!s.facts.tls_expected);
        assert_eq!(s.facts.mail_transactions, 1);
    }

    #[test]
    fn reset_after_client_hello_is_a_failed_handshake() {
        let upgrade: [(Side, &[u8]); 6] = [
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"220 ready\r\n"),
            (C, &[22, 3, 1, 0, 5, 1, 0, 0, 1, 0]),
        ];
        let mut s = play(&upgrade);
        s.finish(EndReason::Reset);
        assert_eq!(s.facts.handshake_failure, Some(HandshakeFailure::Reset));
        let mut s = play(&upgrade);
        s.finish(EndReason::CaptureEnd);
        assert_eq!(
            s.facts.handshake_failure, None,
            "a capture that just ends proves nothing"
        );
    }

    /// A client-only capture (the Zeek trace `smtp-one-side-only` has this shape): two
    /// transactions, the second after the first body, then QUIT; nothing waits for a 354.
    #[test]
    fn client_only_capture_keeps_every_transaction() {
        let cfg = SmtpConfig {
            log_envelope: true,
            ..SmtpConfig::default()
        };
        let mut s = play_with(
            cfg,
            &[
                (C, b"EHLO c.example\r\n"),
                (
                    C,
                    b"MAIL FROM:<a@example>\r\nRCPT TO:<b@example>\r\nDATA\r\n",
                ),
                (C, b"Subject: one\r\n\r\nbody\r\n.\r\n"),
                (C, b"MAIL FROM: x@example\r\nRCPT TO: y@example\r\n"),
                (
                    C,
                    b"RCPT TO:<z@example>\r\nDATA\r\nbody two\r\n.\r\nQUIT\r\n",
                ),
            ],
        );
        s.finish(EndReason::Fin);
        let f = &s.facts;
        assert_eq!(f.mail_transactions, 2);
        assert_eq!(f.rcpt_commands, 3);
        assert_eq!(f.data_commands, 2);
        assert!(f.quit_sent);
        assert_eq!(f.mail_from, ["a@example", "x@example"]);
        assert_eq!(f.rcpt_to, ["b@example", "y@example", "z@example"]);
    }

    /// A flow that ends while DATA waits for its 354: the held bytes are judged, not dropped.
    #[test]
    fn bytes_held_for_a_354_are_judged_at_the_end() {
        let mut s = play(&[
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250 mx\r\n"),
            (C, b"MAIL FROM:<a@x>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"RCPT TO:<b@x>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"DATA\r\nbody\r\n.\r\nMAIL FROM:<c@x>\r\nQUIT\r\n"),
        ]);
        assert_eq!(s.facts.mail_transactions, 1, "held while the 354 is due");
        s.finish(EndReason::Fin);
        assert_eq!(s.facts.mail_transactions, 2);
        assert!(s.facts.quit_sent);
    }

    /// Client-only STARTTLS: the 220 went by unseen; the client's TLS is recognised, and its
    /// application data shows the handshake completed.
    #[test]
    fn client_only_starttls_is_recognised() {
        let hello = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00];
        let app = [0x17, 0x03, 0x03, 0x00, 0x02, 0xaa, 0xbb];
        let mut s = play(&[
            (C, b"EHLO c\r\n"),
            (C, b"STARTTLS\r\n"),
            (C, &hello),
            (C, &app),
        ]);
        s.finish(EndReason::Fin);
        assert!(s.facts.tls_started);
        assert!(s.facts.tls_expected);
        assert!(s.facts.tls_handshake_completed);
        assert_eq!(s.facts.malformed_lines, 0);
    }

    #[test]
    fn envelope_addresses_with_and_without_brackets() {
        for (args, want) in [
            (&b"FROM:<a@b>"[..], "a@b"),
            (b"FROM:<a@b> SIZE=10", "a@b"),
            (b"FROM: <a@b>", "a@b"),
            (b"FROM: a@b", "a@b"),
            (b"from:a@b BODY=8BITMIME", "a@b"),
            (b"TO: a@b", "a@b"),
            (b"FROM:<>", ""),
            (b"FROM <a@b>", "a@b"),
            (b"FROM:", ""),
            (b"", ""),
        ] {
            assert_eq!(
                envelope_address(args),
                (want.to_string(), false),
                "{}",
                String::from_utf8_lossy(args)
            );
        }
        let long = [b"TO:<".as_slice(), &[b'a'; 300], b">"].concat();
        let (address, cut) = envelope_address(&long);
        assert_eq!(address.len(), MAX_ADDRESS);
        assert!(cut);
    }

    #[test]
    fn values_cut_at_their_limit_are_named() {
        let cfg = SmtpConfig {
            max_line: 64,
            ..SmtpConfig::default()
        };
        let name = "n".repeat(300);
        let ehlo = format!("EHLO {name}\r\n");
        let banner = format!("220 {}\r\n", "b".repeat(100));
        let s = play_with(
            SmtpConfig {
                max_line: 2048,
                ..cfg
            },
            &[(S, b"220 mx\r\n"), (C, ehlo.as_bytes())],
        );
        assert_eq!(s.facts.ehlo_name.as_deref().map(str::len), Some(255));
        assert_eq!(s.facts.truncated, ["ehlo_name"]);
        let s = play_with(cfg, &[(S, banner.as_bytes()), (C, b"EHLO c\r\n")]);
        assert_eq!(s.facts.truncated, ["banner"]);
        let s = play(&[(S, b"220 mx\r\n"), (C, b"EHLO c\r\n")]);
        assert!(s.facts.truncated.is_empty());
    }

    /// Issue 10 item 3: a cleartext reply that answers the ClientHello is a failed handshake;
    /// the same reply before the ClientHello is cleartext in the injection window.
    #[test]
    fn reply_to_the_client_hello_is_not_in_the_injection_window() {
        let hello = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00];
        let opening: [(Side, &[u8]); 5] = [
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"220 go ahead\r\n"),
        ];
        let mut answered = opening.to_vec();
        answered.extend([(C, &hello[..]), (S, b"421 4.7.0 TLS not available\r\n")]);
        let mut s = play(&answered);
        s.finish(EndReason::Fin);
        assert!(s.facts.cleartext.is_empty());
        assert_eq!(
            s.facts.handshake_failure,
            Some(HandshakeFailure::NonTlsServerBytes)
        );
        let mut before = opening.to_vec();
        before.extend([
            (S, &b"421 4.7.0 TLS not available\r\n"[..]),
            (C, &hello[..]),
        ]);
        let s = play(&before);
        assert_eq!(s.facts.cleartext.len(), 1);
        assert_eq!(s.facts.cleartext[0].side, Side::Server);
        assert_eq!(s.facts.cleartext[0].phase, "after-220");
    }

    /// A server-only capture: the overwritten STARTTLS shows in the EHLO reply alone, and a 220
    /// after an offer starts the server's TLS.
    #[test]
    fn server_only_capture_shows_the_capabilities() {
        let s = play(&[
            (S, b"220 mx ESMTP\r\n"),
            (S, b"250-mx\r\n250-PIPELINING\r\n250 XXXXXXXA\r\n"),
            (S, b"250 2.1.0 Ok\r\n"),
        ]);
        assert_eq!(s.facts.ehlo_reply_code, Some(250));
        assert_eq!(s.facts.overwritten_tokens.len(), 1);
        assert_eq!(s.facts.unmatched_replies, 1);
        let s = play(&[
            (S, b"220 mx ESMTP\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (S, b"220 2.0.0 Ready to start TLS\r\n"),
            (S, &[0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00]),
        ]);
        assert!(s.facts.starttls_offered);
        assert_eq!(s.facts.starttls_reply_code, Some(220));
        assert!(s.facts.tls_expected);
        assert!(s.facts.tls_server.server_hello);
        // With the client seen, a reply without a command stays unmatched.
        let s = play(&[
            (S, b"220 mx ESMTP\r\n"),
            (C, b"NOOP\r\n"),
            (S, b"250 ok\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
        ]);
        assert_eq!(s.facts.ehlo_reply_code, None);
    }

    /// The printable-ASCII shortcut of `bounded_text` gives what the lossy path gives.
    #[test]
    fn bounded_text_shortcut_equals_the_lossy_path() {
        fn lossy(bytes: &[u8], max: usize) -> (String, bool) {
            let cut = bytes.len() > max;
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
            let text = text
                .chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect();
            (text, cut)
        }
        let cases: [&[u8]; 9] = [
            b"",
            b"mx.example ESMTP ready",
            b"tab\there",
            b"del\x7f",
            b"~ and space ",
            "caf\u{e9} \u{85}next".as_bytes(),
            b"\xff\xfe broken",
            b"\x1b[31mred",
            b"exactly-ten",
        ];
        for bytes in cases {
            for max in [0, 3, 10, 255] {
                assert_eq!(
                    bounded_text(bytes, max),
                    lossy(bytes, max),
                    "{bytes:?} {max}"
                );
            }
        }
    }
}
