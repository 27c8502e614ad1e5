//! Does a certificate name the host the client meant? RFC 6125 matching: case-insensitive, a
//! wildcard only as the whole left-most label and matching exactly one label, IDNA A-labels.

/// Normalises a host or certificate name: lowercase, no trailing dot, U-labels to A-labels.
pub fn normalise(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.');
    if name.is_empty() {
        return None;
    }
    if name.is_ascii() {
        return Some(name.to_ascii_lowercase());
    }
    idna::domain_to_ascii(name).ok()
}

/// True when the certificate name `pattern` covers `host` (both already normalised).
pub fn name_matches(pattern: &str, host: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("*.") {
        // The wildcard stands for exactly one whole label, never for a public suffix alone
        // (`*.com`), and never inside an IDN label.
        if !rest.contains('.') || rest.contains('*') {
            return false;
        }
        let Some((first, suffix)) = host.split_once('.') else {
            return false;
        };
        return !first.is_empty() && !first.starts_with("xn--") && suffix == rest;
    }
    !pattern.contains('*') && pattern == host
}

/// True when the certificate's names cover `host`: the DNS names of the subject alternative
/// name when there are any, else the subject common name (RFC 6125 §6.4.4).
pub fn covers(san_dns: &[String], subject_cn: Option<&str>, host: &str) -> bool {
    let Some(host) = normalise(host) else {
        return false;
    };
    let check = |n: &str| normalise(n).is_some_and(|n| name_matches(&n, &host));
    if san_dns.is_empty() {
        subject_cn.is_some_and(check)
    } else {
        san_dns.iter().any(|n| check(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn wildcards_follow_rfc_6125() {
        let san = s(&["*.example.com"]);
        assert!(covers(&san, None, "mx.example.com"));
        assert!(covers(&san, None, "MX.Example.COM."));
        assert!(!covers(&san, None, "example.com"));
        assert!(!covers(&san, None, "a.b.example.com"));
        assert!(!covers(&san, None, "mx.example.org"));
        assert!(!covers(&s(&["*.com"]), None, "example.com"));
        assert!(!covers(&s(&["m*.example.com"]), None, "mx.example.com"));
        assert!(!covers(&s(&["*.*.example.com"]), None, "a.b.example.com"));
        assert!(!covers(&san, None, "xn--bcher-kva.example.com"));
    }

    #[test]
    fn san_wins_over_cn_and_idna_is_applied() {
        assert!(!covers(
            &s(&["other.example"]),
            Some("mx.example.com"),
            "mx.example.com"
        ));
        assert!(covers(&[], Some("mx.example.com"), "mx.example.com"));
        assert!(covers(
            &s(&["xn--bcher-kva.example"]),
            None,
            "bücher.example"
        ));
        assert!(covers(
            &s(&["BÜCHER.example"]),
            None,
            "xn--bcher-kva.example"
        ));
        assert!(!covers(&[], None, "mx.example.com"));
        assert!(!covers(&s(&["mx.example.com"]), None, ""));
    }
}
