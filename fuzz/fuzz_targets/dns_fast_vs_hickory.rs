//! Differential: the DNS fast path (`dns::fast::parse`) against hickory's parser
//! (`dns::message::parse_hickory`) on arbitrary bytes. Whenever the fast path answers, its
//! message must be exactly hickory's; when it declines, hickory decides (the fast path never
//! has to). Nothing may panic in the fast path.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stripwatch::dns::{fast, message};

fuzz_target!(|data: &[u8]| {
    if let Some(f) = fast::parse(data) {
        assert_eq!(
            Some(f),
            message::parse_hickory(data),
            "the fast path differs from hickory"
        );
    }
});
