//! `--since` / `--until`: a date (`2026-03-02`, midnight UTC) or an RFC 3339 time with whole
//! seconds. Whole seconds because ClickHouse 18.16 keeps `DateTime` in seconds, and both
//! sources must cut the window at the same place.

use super::ReportError;
use super::model::Window;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// Which end of the window a value is for: a date given as `until` includes that whole day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Inclusive start.
    Since,
    /// Exclusive end.
    Until,
}

/// Parses one bound to seconds since the epoch.
pub fn parse_bound(text: &str, end: End) -> Result<i64, ReportError> {
    let name = match end {
        End::Since => "--since",
        End::Until => "--until",
    };
    let text = text.trim();
    if let Ok(d) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        let midnight = d.midnight().assume_utc().unix_timestamp();
        return Ok(match end {
            End::Since => midnight,
            End::Until => midnight + 86_400,
        });
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        ReportError::BadTime(format!(
            "{name} {text:?}: not a date (YYYY-MM-DD) or RFC 3339 time ({e})"
        ))
    })?;
    if t.nanosecond() != 0 {
        return Err(ReportError::BadTime(format!(
            "{name} {text:?}: fractions of a second are not supported"
        )));
    }
    Ok(t.unix_timestamp())
}

/// Parses both bounds and checks that the window is not empty.
pub fn parse_window(since: Option<&str>, until: Option<&str>) -> Result<Window, ReportError> {
    let w = Window {
        since: since.map(|s| parse_bound(s, End::Since)).transpose()?,
        until: until.map(|u| parse_bound(u, End::Until)).transpose()?,
    };
    if let (Some(s), Some(u)) = (w.since, w.until)
        && s >= u
    {
        return Err(ReportError::BadTime(
            "--since must be before --until".to_string(),
        ));
    }
    Ok(w)
}

/// Seconds since the epoch of a record timestamp (`2026-03-02T10:00:00.123456Z`), truncated to
/// the second as ClickHouse stores it.
pub fn record_secs(ts: &str) -> Option<i64> {
    OffsetDateTime::parse(ts, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), the literal form ClickHouse's `toDateTime` reads.
pub fn clickhouse_literal(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| "1970-01-01 00:00:00".to_string())
}

/// RFC 3339 with whole seconds (`2026-03-02T00:00:00Z`), as TLS-RPT's `date-range` wants it.
pub fn rfc3339_secs(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Seconds of midnight UTC of a `YYYY-MM-DD` day.
pub fn day_start(day: &str) -> Option<i64> {
    Date::parse(day, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(parse_bound("1970-01-02", End::Since).unwrap(), 86_400);
        assert_eq!(parse_bound("1970-01-02", End::Until).unwrap(), 172_800);
        assert_eq!(
            parse_bound("1970-01-01T01:00:00+01:00", End::Since).unwrap(),
            0
        );
        assert_eq!(parse_bound("1970-01-01T00:00:10Z", End::Until).unwrap(), 10);
        assert!(parse_bound("1970-01-01T00:00:10.5Z", End::Until).is_err());
        assert!(parse_bound("yesterday", End::Since).is_err());
        assert!(parse_window(Some("2026-03-02"), Some("2026-03-01")).is_err());
        assert!(parse_window(Some("2026-03-02"), Some("2026-03-02")).is_ok());
        assert_eq!(record_secs("1970-01-01T00:00:01.999999Z"), Some(1));
        assert_eq!(clickhouse_literal(86_401), "1970-01-02 00:00:01");
        assert_eq!(rfc3339_secs(86_401), "1970-01-02T00:00:01Z");
        assert_eq!(day_start("1970-01-02"), Some(86_400));
    }
}
