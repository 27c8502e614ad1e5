//! SMTP sessions described in a few fields and expanded into the byte exchange.
//!
//! A [`Dialog`] says what the server announces, whether the client asks for STARTTLS and
//! what happens next, and which mail the client sends. [`Dialog::actions`] expands it into
//! the ordered list of sends and closes, each tagged with a [`Step`] so that a scenario can
//! apply TCP irregularities to exactly one part (say, the EHLO reply). [`play`] puts the
//! actions on a [`Conversation`]. [`Dialog::facts`] gives the session fields an analyzer
//! must report, derived from the same description.

use super::fake_tls;
use super::prng::Prng;
use super::tcp::{Conversation, SendPlan, Side};

/// Which greeting the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// Extended SMTP: the reply lists capabilities.
    Ehlo,
    /// Plain SMTP: no capabilities, so no STARTTLS offer is possible.
    Helo,
}

/// What the client does about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Never asks for TLS.
    None,
    /// Sends STARTTLS after the greeting.
    Starttls {
        /// The server's reply line, e.g. `220 2.0.0 Ready to start TLS`.
        reply: String,
        /// Cleartext the client pipelines in the same segment after `STARTTLS\r\n`.
        pipelined: Option<String>,
        /// What follows the reply.
        then: AfterStarttls,
    },
    /// TLS from the first byte (port 465, RFC 8314).
    Implicit,
}

/// What follows the reply to STARTTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStarttls {
    /// The handshake completes; the rest of the session is encrypted.
    Tls,
    /// ClientHello, then the server resets the connection.
    ServerReset,
    /// ClientHello, then the server closes the connection (FIN) without answering.
    ServerClose,
    /// ClientHello, then the server answers with a fatal alert and closes.
    ServerAlert,
    /// The client sends these cleartext command lines instead of a ClientHello; the server
    /// hangs up.
    ClientCleartext(Vec<String>),
    /// The server sends this cleartext line after its 220; the client hangs up.
    ServerCleartext(String),
    /// The client sends bytes that are neither TLS nor SMTP; the server hangs up.
    ClientGarbage(Vec<u8>),
    /// The reply was a refusal: the session goes on in cleartext (mail, QUIT).
    Continue,
}

/// How a message body travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// DATA: the message as written (CRLF lines); dot-stuffing is applied on the wire.
    Data(Vec<u8>),
    /// BDAT n LAST (RFC 3030): the bytes go as they are, counted, not terminated.
    Bdat(Vec<u8>),
}

/// One mail transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Reverse path (inside `<>`).
    pub from: String,
    /// Forward paths.
    pub to: Vec<String>,
    /// The message.
    pub body: Body,
}

/// A whole SMTP session, as the scenarios need to vary it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// The server's host name (EHLO reply, SNI).
    pub server_name: String,
    /// The name the client greets with.
    pub client_name: String,
    /// The banner line without CRLF; `None` gives [`default_banner`].
    pub banner: Option<String>,
    /// EHLO or HELO.
    pub greeting: Greeting,
    /// EHLO keywords after the first reply line, e.g. `PIPELINING`, `SIZE 10240000`, `STARTTLS`.
    pub capabilities: Vec<String>,
    /// The TLS part.
    pub upgrade: Upgrade,
    /// Mail transactions (cleartext, or inside TLS when the upgrade succeeds).
    pub mails: Vec<Mail>,
    /// Send MAIL, RCPT (and DATA) in one segment and get the replies in one segment.
    pub pipelining: bool,
    /// Which TLS handshake a successful upgrade (or implicit TLS) performs.
    pub handshake: Handshake,
}

/// The TLS handshake of a session that gets to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// TLS 1.2 session resumption: no certificate on the wire.
    Resume,
    /// A full TLS 1.2 handshake whose Certificate message carries this DER certificate.
    Full(&'static [u8]),
    /// TLS 1.3: the certificate travels encrypted.
    Tls13,
}

/// Which part of the dialog a send belongs to (scenarios attach [`SendPlan`]s to steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Server's 220 greeting.
    Banner,
    /// Client's EHLO/HELO.
    Greeting,
    /// Server's reply to EHLO/HELO.
    GreetingReply,
    /// Client's STARTTLS (plus anything pipelined after it).
    Starttls,
    /// Server's reply to STARTTLS.
    StarttlsReply,
    /// Client's ClientHello.
    ClientHello,
    /// Server's first TLS flight (or alert).
    ServerHello,
    /// Client's ChangeCipherSpec + Finished.
    ClientFinished,
    /// Encrypted records after the handshake.
    TlsData,
    /// Cleartext (or garbage) where TLS was due.
    Injected,
    /// A cleartext client command (MAIL, RCPT, DATA, BDAT chunk, QUIT).
    Command,
    /// A cleartext server reply.
    Reply,
    /// A DATA message body with its terminating dot.
    Body,
}

/// One thing that happens on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `side` sends these bytes.
    Send(Side, Step, Vec<u8>),
    /// `side` closes in order (FIN, FIN, ACK).
    Close(Side),
    /// `side` aborts (RST).
    Reset(Side),
}

/// The session fields an analyzer should report, as far as the description determines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The EHLO reply lists STARTTLS exactly (`None` when no cleartext greeting happens).
    pub starttls_offered: Option<bool>,
    /// The client sent STARTTLS.
    pub starttls_sent: bool,
    /// The reply code to STARTTLS, if it was sent.
    pub starttls_reply_code: Option<u16>,
    /// The client's first bytes after the 220 (or on an implicit-TLS port) were a TLS
    /// record (the project's definition; the handshake may still fail).
    pub tls_started: bool,
    /// The server answered with its TLS handshake: the session is encrypted from here on.
    pub tls_completed: bool,
    /// Mail transactions visible in cleartext.
    pub mail_transactions: u64,
}

/// Appends `line` and CRLF.
fn crlf(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A message on the wire: lines starting with '.' get another '.', then `.\r\n`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut copied = 0;
    if message.first() == Some(&b'.') {
        out.push(b'.');
    }
    // Copy whole runs between the rare "\n." places instead of byte by byte; look at
    // eight bytes at a time and only inspect words that hold a line feed.
    let mut at = |i: usize, out: &mut Vec<u8>| {
        if message[i] == b'\n' && message.get(i + 1) == Some(&b'.') {
            out.extend_from_slice(&message[copied..=i]);
            out.push(b'.');
            copied = i + 1;
        }
    };
    let mut chunks = message.chunks_exact(8);
    for (k, chunk) in (&mut chunks).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let x = word ^ 0x0a0a_0a0a_0a0a_0a0a;
        if x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0 {
            for i in k * 8..k * 8 + 8 {
                at(i, &mut out);
            }
        }
    }
    let tail = message.len() - chunks.remainder().len();
    for i in tail..message.len() {
        at(i, &mut out);
    }
    out.extend_from_slice(&message[copied..]);
    if !message.is_empty() && !message.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// `pattern` repeated and cut to exactly `len` bytes (filler bodies).
pub fn repeat_to(pattern: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + pattern.len());
    while out.len() < len {
        out.extend_from_slice(pattern);
    }
    out.truncate(len);
    out
}

/// A dull message (headers and `lines` lines of text), as most mail is.
pub fn boring_message(prng: &mut Prng, from: &str, to: &str, lines: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "meeting",
        "report",
        "invoice",
        "quarterly",
        "attached",
        "please",
        "review",
        "thanks",
        "schedule",
        "update",
        "project",
        "budget",
        "minutes",
        "draft",
        "regards",
        "tomorrow",
    ];
    let mut m = Vec::with_capacity(300 + lines * 60);
    crlf(&mut m, &format!("From: <{from}>"));
    crlf(&mut m, &format!("To: <{to}>"));
    crlf(&mut m, "Subject: Weekly status");
    crlf(&mut m, "Date: Mon, 02 Mar 2026 10:00:00 +0000");
    crlf(
        &mut m,
        &format!("Message-ID: <{:016x}@example.org>", prng.next_u64()),
    );
    crlf(&mut m, "MIME-Version: 1.0");
    crlf(&mut m, "Content-Type: text/plain; charset=us-ascii");
    crlf(&mut m, "");
    for _ in 0..lines {
        let n = prng.range(6, 11);
        for i in 0..n {
            if i > 0 {
                m.push(b' ');
            }
            m.extend_from_slice(prng.pick(&WORDS).as_bytes());
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

impl Dialog {
    /// A typical Postfix-like server offering STARTTLS, a client that uses it; no mail.
    pub fn new(server_name: &str, client_name: &str) -> Dialog {
        Dialog {
            server_name: server_name.to_string(),
            client_name: client_name.to_string(),
            banner: None,
            greeting: Greeting::Ehlo,
            capabilities: Dialog::postfix_capabilities(true),
            upgrade: Upgrade::Starttls {
                reply: "220 2.0.0 Ready to start TLS".to_string(),
                pipelined: None,
                then: AfterStarttls::Tls,
            },
            mails: Vec::new(),
            pipelining: false,
            handshake: Handshake::Resume,
        }
    }

    /// Postfix's usual EHLO keywords, with or without STARTTLS.
    pub fn postfix_capabilities(starttls: bool) -> Vec<String> {
        let mut caps = vec!["PIPELINING", "SIZE 10240000", "VRFY", "ETRN"];
        if starttls {
            caps.push("STARTTLS");
        }
        caps.extend([
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
        ]);
        caps.into_iter().map(String::from).collect()
    }

    /// Replaces the capability equal to `from` (e.g. `STARTTLS`) with `to`, as an on-path
    /// box that overwrites the token would.
    pub fn overwrite_capability(mut self, from: &str, to: &str) -> Dialog {
        for c in &mut self.capabilities {
            if c == from {
                *c = to.to_string();
            }
        }
        self
    }

    /// The fields an analyzer should report for this session.
    pub fn facts(&self) -> Facts {
        let offered = self.greeting == Greeting::Ehlo
            && self
                .capabilities
                .iter()
                .any(|c| c.eq_ignore_ascii_case("STARTTLS"));
        let (sent, code, started, completed) = match &self.upgrade {
            Upgrade::None => (false, None, false, false),
            Upgrade::Implicit => (false, None, true, true),
            Upgrade::Starttls { reply, then, .. } => {
                let code = reply.get(..3).and_then(|c| c.parse().ok());
                let hello = matches!(
                    then,
                    AfterStarttls::Tls
                        | AfterStarttls::ServerReset
                        | AfterStarttls::ServerClose
                        | AfterStarttls::ServerAlert
                );
                let ready = code == Some(220);
                (
                    true,
                    code,
                    ready && hello,
                    ready && *then == AfterStarttls::Tls,
                )
            }
        };
        Facts {
            starttls_offered: if self.upgrade == Upgrade::Implicit {
                None
            } else {
                Some(offered)
            },
            starttls_sent: sent,
            starttls_reply_code: code,
            tls_started: started,
            tls_completed: completed,
            mail_transactions: if completed {
                0
            } else {
                self.cleartext_mail_count()
            },
        }
    }

    /// Mail sent in cleartext: all of it unless TLS took over before the mail.
    fn cleartext_mail_count(&self) -> u64 {
        match &self.upgrade {
            Upgrade::None => self.mails.len() as u64,
            Upgrade::Starttls {
                then: AfterStarttls::Continue,
                ..
            } => self.mails.len() as u64,
            _ => 0,
        }
    }

    /// Expands the description into the ordered sends and closes.
    pub fn actions(&self, prng: &mut Prng) -> Vec<Action> {
        let s = |step: Step, bytes: Vec<u8>| Action::Send(Side::Server, step, bytes);
        let c = |step: Step, bytes: Vec<u8>| Action::Send(Side::Client, step, bytes);
        let mut session_id = [0u8; 32];
        prng.fill(&mut session_id);
        let banner = self
            .banner
            .clone()
            .unwrap_or_else(|| default_banner(&self.server_name));
        let hello = |prng: &mut Prng| {
            c(
                Step::ClientHello,
                fake_tls::client_hello(prng, &self.server_name, &session_id),
            )
        };

        let mut out = Vec::new();
        let Upgrade::Starttls {
            reply,
            pipelined,
            then,
        } = &self.upgrade
        else {
            let mut cleartext = vec![s(Step::Banner, line(&banner))];
            cleartext.extend(self.greeting_exchange());
            cleartext.extend(self.mail_and_quit(prng));
            if self.upgrade == Upgrade::Implicit {
                self.tls_handshake(prng, &session_id, &mut out);
                self.encrypt(prng, cleartext, &mut out);
            } else {
                out = cleartext;
            }
            out.push(Action::Close(Side::Server));
            return out;
        };

        out.push(s(Step::Banner, line(&banner)));
        out.extend(self.greeting_exchange());
        let mut cmd = line("STARTTLS");
        if let Some(extra) = pipelined {
            cmd.extend_from_slice(&line(extra));
        }
        out.push(c(Step::Starttls, cmd));
        out.push(s(Step::StarttlsReply, line(reply)));
        match then {
            AfterStarttls::Tls => {
                self.tls_handshake(prng, &session_id, &mut out);
                let mut inner = self.greeting_exchange();
                inner.extend(self.mail_and_quit(prng));
                self.encrypt(prng, inner, &mut out);
                out.push(Action::Close(Side::Server));
            }
            AfterStarttls::ServerReset => {
                out.push(hello(prng));
                out.push(Action::Reset(Side::Server));
            }
            AfterStarttls::ServerClose => {
                out.push(hello(prng));
                out.push(Action::Close(Side::Server));
            }
            AfterStarttls::ServerAlert => {
                out.push(hello(prng));
                out.push(s(Step::ServerHello, fake_tls::handshake_failure_alert()));
                out.push(Action::Close(Side::Server));
            }
            AfterStarttls::ClientCleartext(lines) => {
                out.push(c(
                    Step::Injected,
                    lines.iter().flat_map(|l| line(l)).collect(),
                ));
                out.push(Action::Close(Side::Server));
            }
            AfterStarttls::ServerCleartext(l) => {
                out.push(s(Step::Injected, line(l)));
                out.push(Action::Close(Side::Client));
            }
            AfterStarttls::ClientGarbage(bytes) => {
                out.push(c(Step::Injected, bytes.clone()));
                out.push(Action::Close(Side::Server));
            }
            AfterStarttls::Continue => {
                out.extend(self.mail_and_quit(prng));
                out.push(Action::Close(Side::Server));
            }
        }
        out
    }

    /// EHLO/HELO and its reply.
    fn greeting_exchange(&self) -> Vec<Action> {
        let mut reply = Vec::new();
        let cmd = match self.greeting {
            Greeting::Ehlo => {
                let first = format!(
                    "250{}{}",
                    if self.capabilities.is_empty() {
                        ' '
                    } else {
                        '-'
                    },
                    self.server_name
                );
                crlf(&mut reply, &first);
                for (i, cap) in self.capabilities.iter().enumerate() {
                    let sep = if i + 1 == self.capabilities.len() {
                        ' '
                    } else {
                        '-'
                    };
                    crlf(&mut reply, &format!("250{sep}{cap}"));
                }
                format!("EHLO {}", self.client_name)
            }
            Greeting::Helo => {
                crlf(&mut reply, &format!("250 {}", self.server_name));
                format!("HELO {}", self.client_name)
            }
        };
        vec![
            Action::Send(Side::Client, Step::Greeting, line(&cmd)),
            Action::Send(Side::Server, Step::GreetingReply, reply),
        ]
    }

    /// The mail transactions as cleartext commands and replies.
    fn mail_exchange(&self, prng: &mut Prng) -> Vec<Action> {
        let mut out = Vec::new();
        let c = |bytes: Vec<u8>| Action::Send(Side::Client, Step::Command, bytes);
        let s = |bytes: Vec<u8>| Action::Send(Side::Server, Step::Reply, bytes);
        for mail in &self.mails {
            let is_data = matches!(mail.body, Body::Data(_));
            let mut cmds = vec![format!("MAIL FROM:<{}>", mail.from)];
            let mut replies = vec!["250 2.1.0 Ok".to_string()];
            for rcpt in &mail.to {
                cmds.push(format!("RCPT TO:<{rcpt}>"));
                replies.push("250 2.1.5 Ok".to_string());
            }
            if is_data {
                cmds.push("DATA".to_string());
                replies.push("354 End data with <CR><LF>.<CR><LF>".to_string());
            }
            if self.pipelining {
                out.push(c(cmds.iter().flat_map(|l| line(l)).collect()));
                out.push(s(replies.iter().flat_map(|l| line(l)).collect()));
            } else {
                for (cmd, reply) in cmds.iter().zip(&replies) {
                    out.push(c(line(cmd)));
                    out.push(s(line(reply)));
                }
            }
            let queue_id = format!("{:010X}", prng.next_u64() & 0xff_ffff_ffff);
            match &mail.body {
                Body::Data(message) => {
                    out.push(Action::Send(Side::Client, Step::Body, dot_stuff(message)));
                    out.push(s(line(&format!("250 2.0.0 Ok: queued as {queue_id}"))));
                }
                Body::Bdat(bytes) => {
                    let mut chunk = line(&format!("BDAT {} LAST", bytes.len()));
                    chunk.extend_from_slice(bytes);
                    out.push(c(chunk));
                    out.push(s(line(&format!(
                        "250 2.0.0 Ok: {} bytes queued as {queue_id}",
                        bytes.len()
                    ))));
                }
            }
        }
        out
    }

    /// The mail transactions, then QUIT and 221.
    fn mail_and_quit(&self, prng: &mut Prng) -> Vec<Action> {
        let mut out = self.mail_exchange(prng);
        out.push(Action::Send(Side::Client, Step::Command, line("QUIT")));
        out.push(Action::Send(
            Side::Server,
            Step::Reply,
            line("221 2.0.0 Bye"),
        ));
        out
    }

    /// ClientHello, the server's flight(s), the client's Finished, as [`Self::handshake`] says.
    fn tls_handshake(&self, prng: &mut Prng, session_id: &[u8; 32], out: &mut Vec<Action>) {
        let c = |step: Step, bytes: Vec<u8>| Action::Send(Side::Client, step, bytes);
        let s = |step: Step, bytes: Vec<u8>| Action::Send(Side::Server, step, bytes);
        let tls13 = self.handshake == Handshake::Tls13;
        out.push(c(
            Step::ClientHello,
            fake_tls::client_hello_with(prng, &self.server_name, session_id, tls13),
        ));
        match self.handshake {
            Handshake::Resume => {
                out.push(s(
                    Step::ServerHello,
                    fake_tls::server_resume_flight(prng, session_id),
                ));
                out.push(c(
                    Step::ClientFinished,
                    fake_tls::change_cipher_spec_and_finished(prng),
                ));
            }
            Handshake::Full(cert) => {
                out.push(s(
                    Step::ServerHello,
                    fake_tls::server_full_flight(prng, &[cert]),
                ));
                out.push(c(
                    Step::ClientFinished,
                    fake_tls::client_key_exchange_and_finished(prng),
                ));
                out.push(s(
                    Step::TlsData,
                    fake_tls::change_cipher_spec_and_finished(prng),
                ));
            }
            Handshake::Tls13 => {
                out.push(s(
                    Step::ServerHello,
                    fake_tls::server_tls13_flight(prng, session_id, 1_200),
                ));
                out.push(c(
                    Step::ClientFinished,
                    fake_tls::client_tls13_finished(prng),
                ));
            }
        }
    }

    /// Replaces each cleartext send by application-data records of matching size.
    fn encrypt(&self, prng: &mut Prng, inner: Vec<Action>, out: &mut Vec<Action>) {
        for a in inner {
            if let Action::Send(side, _, bytes) = a {
                out.push(Action::Send(
                    side,
                    Step::TlsData,
                    fake_tls::application_data(prng, bytes.len()),
                ));
            }
        }
    }
}

/// `text` and CRLF as bytes.
fn line(text: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(text.len() + 2);
    crlf(&mut v, text);
    v
}

/// The usual banner of the synthetic servers.
pub fn default_banner(server_name: &str) -> String {
    format!("220 {server_name} ESMTP Postfix (Debian/GNU)")
}

/// Puts `actions` on the connection after its handshake. `plans` attach a [`SendPlan`] to
/// the first send of a step. Returns, for each action, the number of frames captured before
/// it (so a scenario can cut the capture where it wants).
pub fn play(conv: &mut Conversation, actions: &[Action], plans: &[(Step, SendPlan)]) -> Vec<usize> {
    let mut used = vec![false; plans.len()];
    let mut marks = Vec::with_capacity(actions.len());
    let mut closed = false;
    for action in actions {
        marks.push(conv.frame_count());
        if closed {
            break;
        }
        match action {
            Action::Send(side, step, bytes) => {
                match plans
                    .iter()
                    .enumerate()
                    .find(|(i, (s, _))| s == step && !used[*i])
                {
                    Some((i, (_, plan))) => {
                        used[i] = true;
                        conv.send_with(*side, bytes, plan);
                    }
                    None => conv.send(*side, bytes),
                }
            }
            Action::Close(side) => {
                conv.close(*side);
                closed = true;
            }
            Action::Reset(side) => {
                conv.reset(*side);
                closed = true;
            }
        }
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sends(actions: &[Action]) -> Vec<(Side, Step, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(side, step, b) => {
                    Some((*side, *step, String::from_utf8_lossy(b).into_owned()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn synth_dot_stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(
            dot_stuff(b"a\r\n.\r\n..x\r\nb"),
            b"a\r\n..\r\n...x\r\nb\r\n.\r\n".to_vec()
        );
        assert_eq!(dot_stuff(b".start\r\n"), b"..start\r\n.\r\n".to_vec());
    }

    #[test]
    fn synth_dot_stuffing_matches_the_byte_by_byte_rule() {
        let mut prng = Prng::new(5);
        for len in 0..200 {
            let msg: Vec<u8> = (0..len).map(|_| *prng.pick(b"..\n\rab")).collect();
            let mut want = Vec::new();
            let mut line_start = true;
            for &b in &msg {
                if line_start && b == b'.' {
                    want.push(b'.');
                }
                want.push(b);
                line_start = b == b'\n';
            }
            if !line_start {
                want.extend_from_slice(b"\r\n");
            }
            want.extend_from_slice(b".\r\n");
            assert_eq!(dot_stuff(&msg), want, "{msg:?}");
        }
    }

    #[test]
    fn synth_ehlo_reply_is_a_proper_multiline_reply() {
        let d = Dialog::new("mx.example.net", "c.example.org")
            .overwrite_capability("STARTTLS", "XXXXXXXA");
        let a = sends(&d.actions(&mut Prng::new(1)));
        assert_eq!(a[0].2, "220 mx.example.net ESMTP Postfix (Debian/GNU)\r\n");
        assert_eq!(a[1].2, "EHLO c.example.org\r\n");
        let reply = &a[2].2;
        assert!(reply.starts_with("250-mx.example.net\r\n250-PIPELINING\r\n"));
        assert!(reply.contains("250-XXXXXXXA\r\n"));
        assert!(reply.ends_with("250 CHUNKING\r\n"));
        assert!(!reply.contains("STARTTLS"));
        assert_eq!(d.facts().starttls_offered, Some(false));
    }

    #[test]
    fn synth_starttls_then_tls_carries_no_cleartext_after_220() {
        let d = Dialog::new("mx.example.net", "c.example.org");
        let actions = d.actions(&mut Prng::new(1));
        let steps: Vec<Step> = sends(&actions).iter().map(|s| s.1).collect();
        assert_eq!(
            &steps[..8],
            &[
                Step::Banner,
                Step::Greeting,
                Step::GreetingReply,
                Step::Starttls,
                Step::StarttlsReply,
                Step::ClientHello,
                Step::ServerHello,
                Step::ClientFinished
            ]
        );
        assert!(steps[8..].iter().all(|s| *s == Step::TlsData));
        assert_eq!(actions.last(), Some(&Action::Close(Side::Server)));
        let f = d.facts();
        assert_eq!(
            (
                f.starttls_offered,
                f.starttls_sent,
                f.starttls_reply_code,
                f.tls_started
            ),
            (Some(true), true, Some(220), true)
        );
    }

    #[test]
    fn synth_pipelined_bdat_mail_is_counted_and_not_terminated() {
        let mut d = Dialog::new("mx", "c");
        d.upgrade = Upgrade::None;
        d.pipelining = true;
        d.mails = vec![Mail {
            from: "a@x".into(),
            to: vec!["b@y".into(), "c@y".into()],
            body: Body::Bdat(b"hi\r\n.\r\n".to_vec()),
        }];
        let a = sends(&d.actions(&mut Prng::new(1)));
        assert_eq!(
            a[3].2,
            "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\n"
        );
        assert_eq!(a[4].2, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n");
        assert_eq!(a[5].2, "BDAT 7 LAST\r\nhi\r\n.\r\n");
        assert_eq!(d.facts().mail_transactions, 1);
    }
}
