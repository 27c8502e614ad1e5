//! SMTP words that session records carry: the commands the state machine tells apart and why
//! an upgrade failed.

/// The commands the session state machine distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Extended hello: the reply lists capabilities.
    Ehlo,
    /// Plain hello: no capabilities.
    Helo,
    /// The upgrade request.
    Starttls,
    /// Start of a mail transaction.
    Mail,
    /// A recipient.
    Rcpt,
    /// Message content follows after a 354.
    Data,
    /// A chunk of message content of a stated size follows at once (RFC 3030).
    Bdat,
    /// Authentication; the server may answer 334 and expect SASL lines.
    Auth,
    /// End of session.
    Quit,
    /// Reset the transaction.
    Rset,
    /// Any other command (NOOP, VRFY, XCLIENT, ...).
    Other,
}

impl Verb {
    /// The command as records write it (`EHLO`, `STARTTLS`, `OTHER`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Ehlo => "EHLO",
            Verb::Helo => "HELO",
            Verb::Starttls => "STARTTLS",
            Verb::Mail => "MAIL",
            Verb::Rcpt => "RCPT",
            Verb::Data => "DATA",
            Verb::Bdat => "BDAT",
            Verb::Auth => "AUTH",
            Verb::Quit => "QUIT",
            Verb::Rset => "RSET",
            Verb::Other => "OTHER",
        }
    }
}

impl serde::Serialize for Verb {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a TLS upgrade did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakeFailure {
    /// The connection was reset before the server answered the ClientHello.
    Reset,
    /// The connection was closed before the server answered the ClientHello.
    Closed,
    /// The server answered with a TLS alert.
    Alert,
    /// The client sent bytes that are neither TLS nor SMTP.
    NonTlsClientBytes,
    /// The server sent bytes that are not TLS.
    NonTlsServerBytes,
    /// The client never sent a ClientHello and the connection ended.
    NoClientHello,
    /// Nothing more happened until the flow timed out.
    Stalled,
}

/// What the client's AUTH commands in cleartext showed (RFC 4954), never the credential: the
/// SASL mechanism is kept only as a validated name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleartextAuth {
    /// The mechanism of the last cleartext AUTH: a SASL mechanism name (RFC 4422 §3.1: 1 to 20
    /// of `A-Z`, `0-9`, `-`, `_`), else `invalid`.
    pub mechanism: String,
    /// Capture time of the last cleartext AUTH command.
    pub last_ts_us: i64,
    /// Cleartext lines that carried client SASL data: an initial response on the AUTH line, or
    /// a response line after a `334` (a `*` cancel is not counted).
    pub credential_lines: u32,
    /// The server's final reply to the last AUTH (`235` accepted, `535` refused, ...).
    pub reply_code: Option<u16>,
}
