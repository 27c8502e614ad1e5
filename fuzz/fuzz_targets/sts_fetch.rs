//! The MTA-STS policy-fetch follower (`stripwatch::tls::fetch::PolicyFetch`) and the policy-id
//! parser (`stripwatch::dns::sts::sts_id`): both read hostile bytes (a TCP/443 stream of any
//! host; a TXT answer of any domain).
//!
//! Input layout: byte 0: the number of client bytes (times 8, capped by the input), then the
//! client's stream, then the server's; the rest of the input after byte 0 is also read as TXT
//! strings split at NUL for `sts_id`. The follower must never panic, must stop wanting bytes
//! once it knows the connection is not a policy fetch, and must give an outcome for every end.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stripwatch::dns::sts::sts_id;
use stripwatch::record::EndReason;
use stripwatch::tls::fetch::{FetchKind, PolicyFetch};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let split = (usize::from(head) * 8).min(rest.len());
    let (client, server) = rest.split_at(split);
    let mut f = PolicyFetch::new(0);
    for piece in client.chunks(7) {
        if f.wants_bytes(true) {
            f.feed(true, piece);
        }
    }
    for piece in server.chunks(11) {
        if f.wants_bytes(false) {
            f.feed(false, piece);
        }
    }
    if f.kind() == FetchKind::Other {
        assert!(!f.wants_bytes(true) && !f.wants_bytes(false));
    }
    if let FetchKind::Policy(domain) = f.kind() {
        assert!(!domain.is_empty());
    }
    for end in [
        None,
        Some(EndReason::Fin),
        Some(EndReason::Reset),
        Some(EndReason::Timeout),
        Some(EndReason::CaptureEnd),
        Some(EndReason::Evicted),
    ] {
        let _ = f.outcome(end).as_str();
    }
    let text = String::from_utf8_lossy(rest);
    let id = sts_id(text.split('\0'));
    assert!(id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
});
