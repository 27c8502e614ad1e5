//! AUTH in cleartext (RFC 4954): what the session keeps of it. Only a validated mechanism name,
//! counts and reply codes: the initial response and every SASL response line are opaque
//! (possibly a password) and are never stored, copied or parsed beyond being counted.

use crate::record::CleartextAuth;

/// Stored instead of anything that is not a SASL mechanism name.
pub const INVALID_MECHANISM: &str = "invalid";

/// The mechanism name as stored: `word` itself when it is a SASL mechanism name (RFC 4422 §3.1:
/// 1 to 20 of `A-Z`, `0-9`, `-`, `_`), else `invalid`. Lower case is not folded: a client that
/// sends base64 where the mechanism belongs must not have part of it recorded.
pub fn mechanism_name(word: &[u8]) -> String {
    let valid = (1..=20).contains(&word.len())
        && word
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
    if valid {
        String::from_utf8_lossy(word).into_owned()
    } else {
        INVALID_MECHANISM.to_string()
    }
}

/// A cleartext `AUTH` command with its arguments (`PLAIN`, `PLAIN <initial-response>`,
/// `LOGIN`, ...).
pub fn on_command(auth: &mut Option<CleartextAuth>, args: &[u8], ts_us: i64) {
    let mut words = args
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty());
    let mechanism = mechanism_name(words.next().unwrap_or_default());
    let initial_response = words.next().is_some_and(|w| w != b"=");
    let a = auth.get_or_insert_with(CleartextAuth::default);
    a.mechanism = mechanism;
    a.last_ts_us = ts_us;
    a.reply_code = None;
    a.credential_lines += u32::from(initial_response);
}

/// A client line sent in answer to a `334` challenge: counted unless it cancels (`*`).
pub fn on_response(auth: &mut Option<CleartextAuth>, line: &[u8]) {
    if let Some(a) = auth
        && !line.is_empty()
        && line != b"*"
    {
        a.credential_lines += 1;
    }
}

/// The server's final (non-`334`) reply to AUTH.
pub fn on_reply(auth: &mut Option<CleartextAuth>, code: u16) {
    if let Some(a) = auth {
        a.reply_code = Some(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mechanism_names_are_kept() {
        assert_eq!(mechanism_name(b"PLAIN"), "PLAIN");
        assert_eq!(mechanism_name(b"SCRAM-SHA-256"), "SCRAM-SHA-256");
        assert_eq!(mechanism_name(b"X_OAUTH2"), "X_OAUTH2");
        assert_eq!(
            mechanism_name(b"ABCDEFGHIJ0123456789"),
            "ABCDEFGHIJ0123456789"
        );
        for bad in [
            &b""[..],
            b"login",
            b"ABCDEFGHIJ01234567890",
            b"AHVzZXIAcGFzcw==",
            b"dXNlcg",
            b"PL\xc3\x84IN",
            b"PLAIN/",
        ] {
            assert_eq!(mechanism_name(bad), INVALID_MECHANISM, "{bad:?}");
        }
    }

    #[test]
    fn initial_response_and_sasl_lines_are_counted_not_kept() {
        let mut auth = None;
        on_response(&mut auth, b"c2VjcmV0");
        assert_eq!(auth, None, "a SASL line without AUTH is nobody's");
        on_command(&mut auth, b"PLAIN AHVzZXIAU3ctU2VjcmV0LVBhNTU=", 7);
        on_reply(&mut auth, 535);
        on_command(&mut auth, b"LOGIN", 9);
        on_response(&mut auth, b"dXNlcg==");
        on_response(&mut auth, b"U3ctU2VjcmV0LVBhNTU=");
        on_reply(&mut auth, 235);
        let a = auth.unwrap();
        assert_eq!(a.mechanism, "LOGIN");
        assert_eq!(a.last_ts_us, 9);
        assert_eq!(a.credential_lines, 3);
        assert_eq!(a.reply_code, Some(235));
        let dump = format!("{a:?}");
        assert!(!dump.contains("U3ct") && !dump.contains("dXNl") && !dump.contains("AHVz"));

        let mut auth = None;
        on_command(&mut auth, b"PLAIN =", 1);
        on_response(&mut auth, b"*");
        on_command(&mut auth, b"dXNlcjpTdy1TZWNyZXQtUGE1NQ==", 2);
        let a = auth.unwrap();
        assert_eq!(
            a.credential_lines, 0,
            "an empty response and a cancel carry nothing"
        );
        assert_eq!(a.mechanism, INVALID_MECHANISM);
    }
}
