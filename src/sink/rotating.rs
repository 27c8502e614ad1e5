//! Rotated NDJSON files for runs that do not end (`live`, `analyze --follow`): the records go to
//! `sessions-<time>.ndjson`, `findings-<time>.ndjson`, `dns-<time>.ndjson` and
//! `certificates-<time>.ndjson`, and a new set starts every hour of the wall clock or when a file
//! reaches a size, and whenever another thread asks (SIGHUP). A file that was left is complete
//! and never written again, so a shipper may take it as soon as a newer one exists. `<time>` is
//! `YYYYMMDDTHHMMSSZ` (UTC) of the set's start, the hour itself for an hourly rotation; a name
//! already taken (a restart within the same second) gets `_1`, `_2`, ... The reports read every
//! part of a directory (`report::embedded::parts`).

use crate::record::{CertificateRecord, DnsRecord, SessionRecord};
use crate::sink::ndjson::NdjsonSink;
use crate::sink::{SessionSink, SinkError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// When a new set of files starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// At every full hour of the wall clock (UTC).
    Hourly,
    /// When one of the files has reached this many bytes (checked at every flush, so a file
    /// ends a little above it).
    Size(u64),
}

/// What other threads may change while the sink runs: the policy (a reloaded configuration) and
/// a request for a new set of files now (SIGHUP, for logrotate and shippers).
#[derive(Debug)]
pub struct RotationControl {
    /// 0 for hourly, else the size in bytes.
    size: AtomicU64,
    reopen: AtomicBool,
}

impl RotationControl {
    /// A control starting with `rotation`.
    pub fn new(rotation: Rotation) -> Arc<RotationControl> {
        let control = RotationControl {
            size: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
        };
        control.set(rotation);
        Arc::new(control)
    }

    /// Changes the policy from the next flush on.
    pub fn set(&self, rotation: Rotation) {
        let size = match rotation {
            Rotation::Hourly => 0,
            Rotation::Size(n) => n.max(1),
        };
        self.size.store(size, Ordering::Relaxed);
    }

    /// The policy in force.
    pub fn rotation(&self) -> Rotation {
        match self.size.load(Ordering::Relaxed) {
            0 => Rotation::Hourly,
            n => Rotation::Size(n),
        }
    }

    /// Asks for a new set of files at the next flush (within about a second while running).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

/// The NDJSON sink of a long run, one set of files at a time.
pub struct RotatingNdjsonSink {
    dir: PathBuf,
    control: Arc<RotationControl>,
    current: NdjsonSink,
    /// Wall-clock second at which the current hour ends.
    hour_end: i64,
    /// The second `rotation_due` last answered for, until the `flush` that acts on it.
    asked_at: Option<i64>,
}

/// Seconds since the Unix epoch by the wall clock.
fn wall_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `YYYYMMDDTHHMMSSZ` for a second since the epoch.
fn stamp(secs: i64) -> String {
    let text = crate::util::rfc3339_micros(secs.saturating_mul(1_000_000));
    // 2026-12-07T05:00:00.000000Z -> 20261207T050000Z
    let (date, time) = text.split_once('T').unwrap_or((&text, ""));
    let time = time.split('.').next().unwrap_or("");
    format!("{}T{}Z", date.replace('-', ""), time.replace(':', ""))
}

/// A new set of files in `dir` named for `secs`, with `_N` when the name is taken.
fn open_set(dir: &Path, secs: i64) -> Result<NdjsonSink, SinkError> {
    let stamp = stamp(secs);
    let mut n = 0u32;
    loop {
        let suffix = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}_{n}")
        };
        match NdjsonSink::create_part(dir, &suffix) {
            Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            other => return other,
        }
    }
}

impl RotatingNdjsonSink {
    /// Starts the first set of files in `dir`, named for now.
    pub fn create(dir: &Path, control: Arc<RotationControl>) -> Result<Self, SinkError> {
        let now = wall_secs();
        Ok(RotatingNdjsonSink {
            dir: dir.to_path_buf(),
            control,
            current: open_set(dir, now)?,
            hour_end: next_hour(now),
            asked_at: None,
        })
    }

    /// Ends the current set (flushed, closed, never written again) and starts one named for
    /// `label`.
    fn rotate(&mut self, label: i64, why: &str) -> Result<(), SinkError> {
        self.current.finish()?;
        let next = open_set(&self.dir, label)?;
        let old = std::mem::replace(&mut self.current, next);
        tracing::info!(
            closed = %old.paths()[0].display(),
            opened = %self.current.paths()[0].display(),
            reason = why,
            "output files rotated"
        );
        Ok(())
    }
}

/// The first full hour after `secs`.
fn next_hour(secs: i64) -> i64 {
    (secs.div_euclid(3600) + 1).saturating_mul(3600)
}

impl SessionSink for RotatingNdjsonSink {
    fn session(&mut self, rec: &SessionRecord) -> Result<(), SinkError> {
        self.current.session(rec)
    }

    fn dns(&mut self, rec: &DnsRecord) -> Result<(), SinkError> {
        self.current.dns(rec)
    }

    fn certificate(&mut self, cert: &CertificateRecord) -> Result<(), SinkError> {
        self.current.certificate(cert)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.current.finish()
    }

    /// Flushes, then starts a new set when the hour turned, a file grew past the size, or a new
    /// set was asked for.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.current.flush()?;
        // The moment `rotation_due` answered for, so that both see the same hour.
        let now = self.asked_at.take().unwrap_or_else(wall_secs);
        let due = self.due(now);
        if now >= self.hour_end {
            self.hour_end = next_hour(now);
        }
        match due {
            Some((label, why)) => {
                self.control.reopen.store(false, Ordering::Relaxed);
                self.rotate(label, why)
            }
            None => Ok(()),
        }
    }

    fn rotation_due(&mut self) -> bool {
        let now = wall_secs();
        self.asked_at = Some(now);
        self.due(now).is_some()
    }
}

impl RotatingNdjsonSink {
    /// Whether a new set starts at `now`, named for which second and why: the hour turned (with
    /// hourly rotation), a file reached the size, or a new set was asked for.
    fn due(&self, now: i64) -> Option<(i64, &'static str)> {
        let rotation = self.control.rotation();
        if now >= self.hour_end && rotation == Rotation::Hourly {
            return Some((now - now.rem_euclid(3600), "hourly"));
        }
        if let Rotation::Size(limit) = rotation
            && self.current.largest() >= limit
        {
            return Some((now, "size"));
        }
        if self.control.reopen.load(Ordering::Relaxed) {
            return Some((now, "asked (SIGHUP)"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_time_order() {
        assert_eq!(stamp(1_796_619_600), "20261207T050000Z");
        assert_eq!(next_hour(1_796_619_600), 1_796_623_200);
        assert_eq!(next_hour(1_796_619_599), 1_796_619_600);
    }

    #[test]
    fn a_taken_name_gets_a_number_and_a_closed_set_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let control = RotationControl::new(Rotation::Size(1));
        let mut sink = RotatingNdjsonSink::create(dir.path(), control.clone()).unwrap();
        let first = sink.current.paths()[0].to_path_buf();
        control.reopen();
        sink.flush().unwrap();
        control.reopen();
        sink.flush().unwrap();
        let mut sessions: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("/sessions-"))
            .collect();
        sessions.sort();
        assert_eq!(sessions.len(), 3, "{sessions:?}");
        // Within one second the later sets are numbered, and their names sort after the first
        // (unless the second turned in between: then they are named for the next one).
        assert_eq!(sessions[0], first);
        assert!(std::fs::read_dir(dir.path()).unwrap().count() == 12);
    }
}
