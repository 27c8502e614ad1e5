//! Record times. Every time a record carries is an integer (microseconds since the Unix epoch,
//! the packet's own time) until the record is written: ordering, windows, ClickHouse's DateTime
//! columns and the baseline all want the number, and only the NDJSON text wants RFC 3339, which
//! [`Micros`]'s `Serialize` writes straight into the output.

use serde::{Serialize, Serializer};

/// A capture time in microseconds since the Unix epoch, written as RFC 3339 UTC with
/// microseconds (`2026-03-02T10:00:00.123456Z`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Straight from the stack buffer: no `core::fmt` on the way into the output.
        s.serialize_str(crate::util::Rfc3339(self.0).text().as_str())
    }
}

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::util::Rfc3339(self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Micros;

    #[test]
    fn writes_rfc3339_with_microseconds() {
        let text = serde_json::to_string(&Micros(1_772_445_600_123_456)).unwrap();
        assert_eq!(text, "\"2026-03-02T10:00:00.123456Z\"");
        assert_eq!(Micros(-1).to_string(), "1969-12-31T23:59:59.999999Z");
    }
}
