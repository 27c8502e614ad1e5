//! Words about MTA-STS (RFC 8461) as a passive sensor sees it: how the client's fetch of a
//! domain's policy over HTTPS ended. The policy itself travels inside TLS and is never seen, so
//! these words describe the connection, not the policy.

/// How the policy-fetch connection(s) to `mta-sts.<domain>` linked to a session ended. The
/// strings are the contract (`sts_fetch` in the session record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StsFetch {
    /// The TLS handshake completed, application data flowed both ways, and both sides closed
    /// with FIN: a policy was (very likely) fetched.
    Ok,
    /// A reset ended the connection before that.
    Reset,
    /// The connection was still unfinished when the client delivered, or went idle: the
    /// client gave up waiting (a dropped SYN or a stalled handshake looks like this).
    Timeout,
    /// The handshake did not complete: an alert, a close before both sides sent application
    /// data, or bytes that are not TLS.
    HandshakeFailed,
    /// No fetch from this client to the recipient domain's policy host in the window.
    NotSeen,
}

impl StsFetch {
    /// The stable string.
    pub fn as_str(self) -> &'static str {
        match self {
            StsFetch::Ok => "ok",
            StsFetch::Reset => "reset",
            StsFetch::Timeout => "timeout",
            StsFetch::HandshakeFailed => "handshake-failed",
            StsFetch::NotSeen => "not-seen",
        }
    }

    /// True for the outcomes an attacker on the path produces by blocking the fetch.
    pub fn blocked(self) -> bool {
        matches!(
            self,
            StsFetch::Reset | StsFetch::Timeout | StsFetch::HandshakeFailed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::StsFetch;

    #[test]
    fn serialised_names_are_the_stable_strings() {
        for f in [
            StsFetch::Ok,
            StsFetch::Reset,
            StsFetch::Timeout,
            StsFetch::HandshakeFailed,
            StsFetch::NotSeen,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
    }
}
