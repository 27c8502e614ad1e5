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
/// membership matters, so a linear scan over this short list is fine.
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
    line.split([' ', '\t']).next().unwrap_or("")
}

/// Classifies one capability keyword.
pub fn classify(keyword: &str) -> TokenClass {
    let k = keyword.as_bytes();
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
        && !KNOWN_KEYWORDS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(keyword))
        && !k[0].eq_ignore_ascii_case(&b'X')
    {
        return TokenClass::SameLengthUnknown;
    }
    TokenClass::Other
}

/// A masked token: at least six of its characters are `X` or `*`, and nothing but letters, digits
/// and `*`. Real vendor extensions start with one `X`, never with a run of them.
fn is_masked(k: &[u8]) -> bool {
    if !(6..=10).contains(&k.len()) {
        return false;
    }
    let masks = k.iter().filter(|b| matches!(b, b'X' | b'x' | b'*')).count();
    let leading = k
        .iter()
        .take_while(|b| matches!(b, b'X' | b'x' | b'*'))
        .count();
    masks >= 6 && leading >= 4 && k.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'*')
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
    fn banners() {
        assert!(is_masked_banner("******************************"));
        assert!(is_masked_banner("**** ****** **** ***"));
        assert!(!is_masked_banner("mx.example.com ESMTP Postfix"));
        assert!(!is_masked_banner("mx.example.com ESMTP ***"));
    }
}
