//! SMTP reply and command lines (RFC 5321 §4.1, §4.2), parsed from borrowed bytes.

/// One line of a server reply: `250-PIPELINING` is code 250, more lines follow, text
/// `PIPELINING`.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The three-digit reply code.
    pub code: u16,
    /// True for `250-` (the reply continues), false for `250 ` or a bare code.
    pub more: bool,
    /// The text after the separator.
    pub text: &'a [u8],
}

/// Parses a reply line; `None` when it does not start with a three-digit code in 200–599 (or
/// 1xx, which RFC 5321 reserves but some servers send).
pub fn parse_reply_line(line: &[u8]) -> Option<ReplyLine<'_>> {
    let digits = line.get(..3)?;
    if !(b'1'..=b'5').contains(&digits[0])
        || !digits[1].is_ascii_digit()
        || !digits[2].is_ascii_digit()
    {
        return None;
    }
    let code = u16::from(digits[0] - b'0') * 100
        + u16::from(digits[1] - b'0') * 10
        + u16::from(digits[2] - b'0');
    match line.get(3) {
        None => Some(ReplyLine {
            code,
            more: false,
            text: &[],
        }),
        Some(b'-') => Some(ReplyLine {
            code,
            more: true,
            text: &line[4..],
        }),
        Some(b' ') | Some(b'\t') => Some(ReplyLine {
            code,
            more: false,
            text: &line[4..],
        }),
        Some(_) => None,
    }
}

pub use crate::record::Verb;

/// A parsed command line: the verb and its argument bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Command<'a> {
    /// The verb.
    pub verb: Verb,
    /// Everything after the verb and one space.
    pub args: &'a [u8],
}

/// Parses a command line; `None` when its first word is not a plausible SMTP verb (letters only,
/// 3 to 12 of them), which is how binary or TLS bytes on the command channel are recognised.
pub fn parse_command(line: &[u8]) -> Option<Command<'_>> {
    let end = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
    let word = &line[..end];
    if !(3..=12).contains(&word.len()) || !word.iter().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    // Uppercased on the stack: the word is at most 12 letters, and this runs for every command.
    let mut upper = [0u8; 12];
    let upper = &mut upper[..word.len()];
    upper.copy_from_slice(word);
    upper.make_ascii_uppercase();
    let verb = match &*upper {
        b"EHLO" => Verb::Ehlo,
        b"HELO" => Verb::Helo,
        b"STARTTLS" => Verb::Starttls,
        b"MAIL" => Verb::Mail,
        b"RCPT" => Verb::Rcpt,
        b"DATA" => Verb::Data,
        b"BDAT" => Verb::Bdat,
        b"AUTH" => Verb::Auth,
        b"QUIT" => Verb::Quit,
        b"RSET" => Verb::Rset,
        _ => Verb::Other,
    };
    let args = line.get(end + 1..).unwrap_or(&[]);
    Some(Command { verb, args })
}

/// Reads `BDAT <size> [LAST]`: the chunk size and whether it is the last chunk.
pub fn parse_bdat(args: &[u8]) -> Option<(u64, bool)> {
    let mut words = args.split(|b| *b == b' ').filter(|w| !w.is_empty());
    let size = words.next()?;
    if size.is_empty() || size.len() > 19 || !size.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(size).ok()?.parse().ok()?;
    let last = words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"LAST"));
    Some((size, last))
}

/// The first word of a command, uppercased, for evidence (never the arguments: they may hold
/// addresses or credentials).
pub fn verb_text(line: &[u8]) -> String {
    let end = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end.min(16)]).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        let l = parse_reply_line(b"250-PIPELINING").unwrap();
        assert_eq!((l.code, l.more, l.text), (250, true, &b"PIPELINING"[..]));
        let l = parse_reply_line(b"220 mx ESMTP").unwrap();
        assert_eq!((l.code, l.more), (220, false));
        assert_eq!(parse_reply_line(b"250").unwrap().code, 250);
        assert!(parse_reply_line(b"EHLO x").is_none());
        assert!(parse_reply_line(b"25").is_none());
        assert!(parse_reply_line(b"2500").is_none());
        assert!(parse_reply_line(b"\x16\x03\x01").is_none());
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command(b"ehlo client").unwrap().verb, Verb::Ehlo);
        assert_eq!(parse_command(b"STARTTLS").unwrap().verb, Verb::Starttls);
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b>").unwrap().args,
            b"FROM:<a@b>"
        );
        assert_eq!(parse_command(b"XCLIENT NAME=x").unwrap().verb, Verb::Other);
        assert!(parse_command(b"\x16\x03\x01\x00").is_none());
        assert!(parse_command(b"").is_none());
        assert_eq!(parse_bdat(b"1000 LAST"), Some((1000, true)));
        assert_eq!(parse_bdat(b"12"), Some((12, false)));
        assert_eq!(parse_bdat(b"99999999999999999999999"), None);
        assert_eq!(parse_bdat(b"x"), None);
    }
}
