//! Classifies the keyword of each EHLO capability line. The STARTTLS advertisement travels in
//! cleartext, and on-path boxes overwrite it in place (Cisco ASA writes `XXXXXXXA`, same length so
//! TCP sequence numbers need no fix-up). Telling such a token apart from the many real 8-letter
//! extensions (`8BITMIME`, `CHUNKING`, `SMTPUTF8`, `XFORWARD`) is the whole point of this module.

/// What a capability keyword is, as far as STARTTLS is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenClass {
    /// Exactly `STARTTLS` (keywords are case-insensitive).
    Starttls,
    /// A run of `X` or `*` where STARTTLS would be (`XXXXXXXA`, `XXXXXXXX`, `********`).
    Masked,
    /// One edit away from STARTTLS (`STARTTLX`, `STARTLS`, `XSTARTTLS`).
    NearMiss,
    /// Eight characters, not a known extension, not a vendor `X` extension: an overwrite with
    /// arbitrary bytes.
    SameLengthUnknown,
    /// Anything else: a real extension.
    Other,
}

impl TokenClass {
    /// True for the classes that mean "a STARTTLS token was here and was destroyed".
    pub fn is_overwrite(self) -> bool {
        matches!(
            self,
            TokenClass::Masked | TokenClass::NearMiss | TokenClass::SameLengthUnknown
        )
    }
}

/// Registered (IANA "SMTP Service Extensions") and widespread vendor keywords. Only their
/// membership matters, and only for eight-byte keywords (`KNOWN_EIGHT`).
const KNOWN_KEYWORDS: &[&str] = &[
    "8BITMIME",
    "ATRN",
    "AUTH",
    "BINARYMIME",
    "BURL",
    "CHECKPOINT",
    "CHUNKING",
    "CONNEG",
    "CONPERM",
    "DELIVERBY",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "ETRN",
    "EXPN",
    "FUTURERELEASE",
    "HELP",
    "LIMITS",
    "MT-PRIORITY",
    "MTRK",
    "NO-SOLICITING",
    "ONEX",
    "PIPELINING",
    "REQUIRETLS",
    "RRVS",
    "SAML",
    "SEND",
    "SIZE",
    "SMTPUTF8",
    "SOML",
    "STARTTLS",
    "TURN",
    "UTF8SMTP",
    "VERB",
    "VRFY",
    "XCLIENT",
    "XEXCH50",
    "XFORWARD",
    "XOORG",
    "XRDST",
    "XSHADOW",
    "XUSR",
    "XVERP",
    "XLOOP",
    "XTXN",
    "XMRG",
    "XQUE",
];

/// The keyword of a capability line: its first word (`AUTH` in `AUTH PLAIN LOGIN`; `AUTH=LOGIN`
/// keeps its `=` form as one word).
pub fn keyword(line: &str) -> &str {
    // Space and tab are ASCII and never part of a multi-byte character: a byte search ends the
    // word where a split on those characters does, without the pattern machinery.
    let end = line
        .bytes()
        .position(|b| b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    &line[..end]
}

/// Classifies one capability keyword.
pub fn classify(keyword: &str) -> TokenClass {
    let k = keyword.as_bytes();
    // Every class but `Other` needs six to ten bytes (STARTTLS and a same-length overwrite
    // eight, a near miss seven to nine, a masked token six to ten): most keywords end here.
    if !(6..=10).contains(&k.len()) {
        return TokenClass::Other;
    }
    if keyword.eq_ignore_ascii_case("STARTTLS") {
        return TokenClass::Starttls;
    }
    if is_masked(k) {
        return TokenClass::Masked;
    }
    if edit_distance_one(k, b"STARTTLS") {
        return TokenClass::NearMiss;
    }
    if k.len() == 8
        && k.iter().all(|b| b.is_ascii_alphanumeric())
        && !is_known_eight(k)
        && !k[0].eq_ignore_ascii_case(&b'X')
    {
        return TokenClass::SameLengthUnknown;
    }
    TokenClass::Other
}

/// The eight-byte entries of `KNOWN_KEYWORDS`, uppercase, taken from the list at compile time:
/// `classify` compares an eight-byte keyword with these few instead of scanning the whole list.
const KNOWN_EIGHT: [[u8; 8]; count_eight(KNOWN_KEYWORDS)] = eight_of(KNOWN_KEYWORDS);

const fn count_eight(list: &[&str]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < list.len() {
        if list[i].len() == 8 {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn eight_of<const N: usize>(list: &[&str]) -> [[u8; 8]; N] {
    let mut out = [[0u8; 8]; N];
    let (mut i, mut n) = (0, 0);
    while i < list.len() {
        let word = list[i].as_bytes();
        if word.len() == 8 {
            let mut j = 0;
            while j < 8 {
                out[n][j] = word[j].to_ascii_uppercase();
                j += 1;
            }
            n += 1;
        }
        i += 1;
    }
    out
}

/// Whether an eight-byte keyword is in `KNOWN_KEYWORDS`, ASCII case ignored.
fn is_known_eight(k: &[u8]) -> bool {
    let Ok(mut upper) = <[u8; 8]>::try_from(k) else {
        return false;
    };
    upper.make_ascii_uppercase();
    KNOWN_EIGHT.contains(&upper)
}

/// A masked token: at least six of its characters are `X` or `*`, and nothing but letters, digits
/// and `*`. Real vendor extensions start with one `X`, never with a run of them.
fn is_masked(k: &[u8]) -> bool {
    if !(6..=10).contains(&k.len()) {
        return false;
    }
    // The run at the start first: a real keyword fails it at its first byte.
    let leading = k
        .iter()
        .take_while(|b| matches!(b, b'X' | b'x' | b'*'))
        .count();
    if leading < 4 {
        return false;
    }
    let masks = k.iter().filter(|b| matches!(b, b'X' | b'x' | b'*')).count();
    masks >= 6 && k.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'*')
}

/// True when `a` and `b` differ by exactly one substitution, insertion or deletion (ASCII case
/// ignored). Linear time; no allocation.
fn edit_distance_one(a: &[u8], b: &[u8]) -> bool {
    let eq = |x: u8, y: u8| x.eq_ignore_ascii_case(&y);
    let (la, lb) = (a.len(), b.len());
    if la.abs_diff(lb) > 1 {
        return false;
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| eq(**x, **y)).count();
    if prefix == la && la == lb {
        return false; // identical
    }
    let rest_eq =
        |x: &[u8], y: &[u8]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq(*p, *q));
    match la.cmp(&lb) {
        std::cmp::Ordering::Equal => rest_eq(&a[prefix + 1..], &b[prefix + 1..]),
        std::cmp::Ordering::Greater => rest_eq(&a[prefix + 1..], &b[prefix..]),
        std::cmp::Ordering::Less => rest_eq(&a[prefix..], &b[prefix + 1..]),
    }
}

/// A masked banner (`220 ****************`): ASA-style inspection hides the server's identity.
pub fn is_masked_banner(text: &str) -> bool {
    let stars = text.bytes().filter(|b| *b == b'*').count();
    let visible = text.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    stars >= 8 && stars * 2 >= visible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwritten_tokens_are_caught() {
        for t in ["XXXXXXXA", "XXXXXXXX", "xxxxxxxx", "********", "XXXXXXXXA"] {
            assert_eq!(classify(t), TokenClass::Masked, "{t}");
        }
        for t in ["STARTTLX", "STARTLS", "XSTARTTLS", "5TARTTLS", "sTaRtTlZ"] {
            assert_eq!(classify(t), TokenClass::NearMiss, "{t}");
        }
        for t in ["QWERTYUI", "ABCDEFGH", "00000000"] {
            assert_eq!(classify(t), TokenClass::SameLengthUnknown, "{t}");
        }
        assert_eq!(classify("starttls"), TokenClass::Starttls);
        assert_eq!(classify("STARTTLS"), TokenClass::Starttls);
    }

    #[test]
    fn ordinary_extensions_are_not_overwrites() {
        for line in [
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
            "PIPELINING",
            "DSN",
            "ENHANCEDSTATUSCODES",
            "AUTH PLAIN LOGIN",
            "AUTH=LOGIN PLAIN",
            "SIZE 10240000",
            "X-EXPS GSSAPI NTLM",
            "X-ANONYMOUSTLS",
            "XFORWARD NAME ADDR",
            "XEXCH50",
            "XRDST",
            "XCLIENT NAME",
            "8bitmime",
            "smtputf8",
            "chunking",
            "VRFY",
            "ETRN",
            "BINARYMIME",
            "DELIVERBY 300",
            "XSHADOW",
            "XXXX",
            "REQUIRETLS",
            "HELP",
            "X-LINK2STATE",
            "XOORG",
        ] {
            let class = classify(keyword(line));
            assert!(!class.is_overwrite(), "{line} classified {class:?}");
        }
    }

    #[test]
    fn known_eight_is_the_list() {
        for known in KNOWN_KEYWORDS {
            let bytes = known.as_bytes();
            assert_eq!(is_known_eight(bytes), bytes.len() == 8, "{known}");
            assert_eq!(
                is_known_eight(known.to_ascii_lowercase().as_bytes()),
                bytes.len() == 8
            );
        }
        assert_eq!(KNOWN_EIGHT.len(), 6);
        assert!(!is_known_eight(b"QWERTYUI") && !is_known_eight(b"8BITMIM"));
    }

    /// The classes as the former whole-list scan gave them, for keywords of every length.
    #[test]
    fn classes_by_length() {
        assert_eq!(classify(""), TokenClass::Other);
        assert_eq!(classify("XXXXX"), TokenClass::Other);
        assert_eq!(classify("XXXXXX"), TokenClass::Masked);
        assert_eq!(classify("**********"), TokenClass::Masked);
        assert_eq!(classify("***********"), TokenClass::Other);
        assert_eq!(classify("STARTTL"), TokenClass::NearMiss);
        assert_eq!(classify("STARTTLSS"), TokenClass::NearMiss);
        assert_eq!(classify("UTF8SMTP"), TokenClass::Other);
        assert_eq!(classify("XABCDEFG"), TokenClass::Other);
        assert_eq!(classify("ABC-DEFG"), TokenClass::Other);
        assert_eq!(keyword("AUTH\tPLAIN"), "AUTH");
        assert_eq!(keyword("\u{e9}t\u{e9} x"), "\u{e9}t\u{e9}");
        assert_eq!(keyword(" X"), "");
    }

    #[test]
    fn banners() {
        assert!(is_masked_banner("******************************"));
        assert!(is_masked_banner("**** ****** **** ***"));
        assert!(!is_masked_banner("mx.example.com ESMTP Postfix"));
        assert!(!is_masked_banner("mx.example.com ESMTP ***"));
    }
}
