//! Following a directory that another program fills with rotated capture files (`tcpdump -G` or
//! `-C`, dumpcap ring buffers, netsniff-ng): [`FollowDir`] is one [`PacketSource`] that reads
//! every *closed* capture file of the directory, in name order, exactly once, and waits for the
//! next one until it is told to stop. The pipeline sees one long capture, so a flow (or a DNS
//! lookup and the session it led to) that spans two files is followed across them.
//!
//! **When a file counts as closed.** The program writing it gives no signal, so it is inferred:
//!
//! - a later capture file (in name order) exists, and the file's size and modification time have
//!   not changed for [`STABLE`] (2 s): `tcpdump -G/-C` and dumpcap close a file before they
//!   open the next; the short wait covers a post-rotate `gzip` still writing an older file; or
//! - it has not changed for `settle` (`--follow-settle`), for the last file of a capture that
//!   stopped.
//!
//! Either way the file must not be open for writing by any process this one can see (its
//! `/proc/PID/fdinfo` flags), so that the file tcpdump still writes on a quiet link (its buffer
//! not flushed for minutes) is never read half-way and then taken as done. Processes of other
//! users are visible only to root; without that, the name rule and `settle` decide alone.
//!
//! **Which files.** Regular files whose name, without a `.gz` or `.zst` suffix, ends in `.pcap`,
//! `.pcapng` or `.cap`, optionally followed by digits (`tcpdump -C` appends a count: `mail.pcap`,
//! `mail.pcap1`, ...). Names starting with `.` are ignored (temporary files). The order is the
//! natural order of the names (digit runs compare as numbers), which is time order for tcpdump
//! `-G` names (`mail-%Y%m%d%H%M%S.pcap`), dumpcap rings (`x_00001_20261207...pcapng`), `-C`
//! counts and netsniff-ng's epoch names. A file and its compressed form (`x.pcap`,
//! `x.pcap.gz`, as `tcpdump -z gzip` makes) are one file, read once; names reused for new
//! contents (`tcpdump -W` wrapping) are not read again.
//!
//! **Position.** What was read is kept in a [`Ledger`], per name: done, or (after a stop in the
//! middle of a file) how many packets were handed on, so that a restart goes on after them and no
//! packet is read twice. The CLI keeps it in the `--state` store, or in memory.

use super::{CaptureError, CaptureFile, PacketSource, SourceEvent, SourceStats};
use std::cmp::Ordering as Order;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How long a file must stay unchanged once a later file exists (a compressor writing it).
pub const STABLE: Duration = Duration::from_secs(2);
/// How often the directory is listed while nothing is ready.
const POLL: Duration = Duration::from_secs(1);
/// The steps of the wait between polls, so a stop is seen quickly.
const STEP: Duration = Duration::from_millis(100);

/// How far reading one file got: every packet (`done`), or the first `packets` of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Packets handed to the pipeline (the next run skips this many).
    pub packets: u64,
    /// The whole file was read.
    pub done: bool,
}

/// Where a follow remembers which files it read: in memory, or lasting (the `--state` store).
pub trait Ledger: Send {
    /// How far `name` was read, or `None` when it never was.
    fn position(&self, name: &str) -> Result<Option<Position>, String>;
    /// Remembers how far `name` was read; a lasting ledger has it on disk when this returns.
    fn record(&mut self, name: &str, position: Position) -> Result<(), String>;
}

/// A ledger that lasts as long as the process (no `--state`): a restart reads every file again.
#[derive(Debug, Default)]
pub struct MemoryLedger(HashMap<String, Position>);

impl Ledger for MemoryLedger {
    fn position(&self, name: &str) -> Result<Option<Position>, String> {
        Ok(self.0.get(name).copied())
    }

    fn record(&mut self, name: &str, position: Position) -> Result<(), String> {
        self.0.insert(name.to_string(), position);
        Ok(())
    }
}

/// Counters another thread may read while the follow runs (logs, the summary).
#[derive(Debug, Default)]
pub struct FollowCounters {
    /// Files read to their end.
    pub files: AtomicU64,
    /// Closed files that were not captures or could not be read (logged, taken as done).
    pub skipped: AtomicU64,
    /// Packets handed to the pipeline.
    pub packets: AtomicU64,
    /// Captured bytes handed to the pipeline.
    pub bytes: AtomicU64,
    /// Packets cut by the snap length the files were written with.
    pub snapped: AtomicU64,
}

/// A capture file waiting in the directory.
#[derive(Clone, Debug)]
struct Candidate {
    /// The name without a compression suffix: the key in the ledger.
    identity: String,
    path: PathBuf,
    size: u64,
    modified: SystemTime,
}

/// When a file was last seen to change.
struct Watched {
    size: u64,
    modified: SystemTime,
    since: Instant,
}

/// Reads the closed capture files of a directory as one source, until `stop`.
pub struct FollowDir {
    name: String,
    dir: PathBuf,
    settle: Duration,
    ledger: Box<dyn Ledger>,
    stop: Arc<AtomicBool>,
    counters: Arc<FollowCounters>,
    watched: HashMap<String, Watched>,
    /// The listing failed last time (logged once until it works again).
    listing_failed: bool,
}

impl FollowDir {
    /// Follows `dir` (which must be a readable directory now), remembering in `ledger`; a file
    /// with no later file is taken as closed after `settle` unchanged. `stop` ends the follow:
    /// within one packet while reading, within 0.1 s while waiting.
    pub fn open(
        dir: &Path,
        settle: Duration,
        ledger: Box<dyn Ledger>,
        stop: Arc<AtomicBool>,
    ) -> Result<FollowDir, CaptureError> {
        std::fs::read_dir(dir).map_err(|reason| CaptureError::Io {
            path: dir.display().to_string(),
            reason,
        })?;
        Ok(FollowDir {
            name: dir.display().to_string(),
            dir: dir.to_path_buf(),
            settle,
            ledger,
            stop,
            counters: Arc::new(FollowCounters::default()),
            watched: HashMap::new(),
            listing_failed: false,
        })
    }

    /// The counters, for other threads.
    pub fn counters(&self) -> Arc<FollowCounters> {
        self.counters.clone()
    }

    fn ledger_error(&self, e: String) -> CaptureError {
        CaptureError::Io {
            path: self.name.clone(),
            reason: std::io::Error::other(format!("follow position: {e}")),
        }
    }

    /// The capture files not yet read, in name order (a file and its compressed form once).
    fn pending(&mut self) -> Result<Vec<Candidate>, CaptureError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                self.listing_failed = false;
                entries
            }
            Err(e) => {
                if !self.listing_failed {
                    tracing::warn!(dir = %self.name, error = %e, "follow: cannot list the directory; retrying");
                }
                self.listing_failed = true;
                return Ok(Vec::new());
            }
        };
        let mut found: HashMap<String, Candidate> = HashMap::new();
        for entry in entries.flatten() {
            let Some(file) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(identity) = capture_identity(&file) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let candidate = Candidate {
                identity: identity.to_string(),
                path: entry.path(),
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            };
            // The uncompressed form wins: it is complete before a compressor starts on it.
            match found.get(identity) {
                Some(known) if known.path.file_name() == Some(identity.as_ref()) => {}
                _ => {
                    found.insert(identity.to_string(), candidate);
                }
            }
        }
        let mut list = Vec::with_capacity(found.len());
        for (identity, c) in found {
            let done = self
                .ledger
                .position(&identity)
                .map_err(|e| self.ledger_error(e))?
                .is_some_and(|p| p.done);
            if done {
                self.watched.remove(&identity);
            } else {
                list.push(c);
            }
        }
        list.sort_by(|a, b| natural(&a.identity, &b.identity));
        Ok(list)
    }

    /// Whether `c` is closed (module docs); `later` says a later capture file exists.
    fn closed(&mut self, c: &Candidate, later: bool) -> bool {
        let now = Instant::now();
        let w = self
            .watched
            .entry(c.identity.clone())
            .or_insert_with(|| Watched {
                size: c.size,
                modified: c.modified,
                since: now,
            });
        if w.size != c.size || w.modified != c.modified {
            *w = Watched {
                size: c.size,
                modified: c.modified,
                since: now,
            };
        }
        // Unchanged for as long as we watched it, or since it was last written, if longer.
        let quiet = now.duration_since(w.since).max(
            SystemTime::now()
                .duration_since(c.modified)
                .unwrap_or_default(),
        );
        let by_name = later && quiet >= STABLE;
        (by_name || quiet >= self.settle) && !open_for_writing(&c.path)
    }

    /// Reads one closed file from where an earlier run stopped. `Break` when the follow must
    /// stop (signal, or the pipeline asked).
    fn read_file<F>(
        &mut self,
        c: &Candidate,
        stats: &mut SourceStats,
        on_event: &mut F,
    ) -> Result<ControlFlow<()>, CaptureError>
    where
        F: FnMut(SourceEvent<'_>) -> ControlFlow<()>,
    {
        let start = self
            .ledger
            .position(&c.identity)
            .map_err(|e| self.ledger_error(e))?
            .unwrap_or_default();
        let path = c.path.display().to_string();
        let mut delivered = start.packets;
        let (mut fresh_bytes, mut fresh_snapped) = (0u64, 0u64);
        let mut stopped = false;
        let mut seen = 0u64;
        let stop = &self.stop;
        let read = CaptureFile::open(&path).and_then(|file| {
            file.for_each_packet(|pkt| {
                seen += 1;
                if seen <= start.packets {
                    return ControlFlow::Continue(());
                }
                if stop.load(Ordering::Relaxed) || on_event(SourceEvent::Packet(pkt)).is_break() {
                    stopped = true;
                    return ControlFlow::Break(());
                }
                delivered += 1;
                stats.packets += 1;
                stats.bytes += pkt.data.len() as u64;
                fresh_bytes += pkt.data.len() as u64;
                if (pkt.orig_len as usize) > pkt.data.len() {
                    stats.snapped += 1;
                    fresh_snapped += 1;
                }
                ControlFlow::Continue(())
            })
        });
        let fresh = delivered - start.packets;
        self.counters.packets.fetch_add(fresh, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(fresh_bytes, Ordering::Relaxed);
        self.counters
            .snapped
            .fetch_add(fresh_snapped, Ordering::Relaxed);
        match &read {
            Ok(s) if !stopped => {
                stats.corrupt_blocks += s.corrupt_blocks;
                stats.truncated |= s.truncated;
                self.counters.files.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    file = %c.identity,
                    packets = fresh,
                    resumed_after = start.packets,
                    truncated = s.truncated,
                    "follow: read {}",
                    c.identity
                );
            }
            Ok(_) => tracing::info!(
                file = %c.identity,
                packets = delivered,
                "follow: stopped in {}; a restart goes on after packet {delivered}",
                c.identity
            ),
            Err(e) => {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %c.identity, error = %e, "follow: skipped {}", c.identity);
            }
        }
        let position = Position {
            packets: delivered,
            done: !stopped,
        };
        self.ledger
            .record(&c.identity, position)
            .map_err(|e| self.ledger_error(e))?;
        self.watched.remove(&c.identity);
        Ok(if stopped {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }

    /// Waits one poll interval; false when told to stop meanwhile.
    fn wait(&self) -> bool {
        let until = Instant::now() + POLL;
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(STEP);
        }
        !self.stop.load(Ordering::Relaxed)
    }
}

impl PacketSource for FollowDir {
    type Part = FollowDir;

    fn name(&self) -> &str {
        &self.name
    }

    /// True: the run is long and records must reach the files while it goes on, as `live`'s
    /// do (the output stage releases held sessions after `--hold` of packet time and flushes).
    /// Unlike a live capture it never ticks with the wall clock: the files may be hours old,
    /// and capture time moves with their packets only.
    fn live(&self) -> bool {
        true
    }

    fn for_each_event<F>(mut self, mut on_event: F) -> Result<SourceStats, CaptureError>
    where
        F: FnMut(SourceEvent<'_>) -> ControlFlow<()>,
    {
        let mut stats = SourceStats::default();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let pending = self.pending()?;
            let mut stopped = false;
            for (i, c) in pending.iter().enumerate() {
                // In order: a file that is not closed yet holds back the later ones.
                if !self.closed(c, i + 1 < pending.len()) {
                    break;
                }
                if self.read_file(c, &mut stats, &mut on_event)?.is_break() {
                    stopped = true;
                    break;
                }
            }
            if stopped || !self.wait() {
                break;
            }
        }
        Ok(stats)
    }
}

/// The name a capture file is known by (without `.gz`/`.zst`), or `None` for other files.
fn capture_identity(file: &str) -> Option<&str> {
    if file.starts_with('.') {
        return None;
    }
    let base = file
        .strip_suffix(".gz")
        .or_else(|| file.strip_suffix(".zst"))
        .unwrap_or(file);
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit());
    [".pcap", ".pcapng", ".cap"]
        .iter()
        .any(|ext| stem.ends_with(ext) && stem.len() > ext.len())
        .then_some(base)
}

/// Natural order: runs of digits compare as numbers (`x.pcap2` before `x.pcap10`), the rest
/// byte by byte.
fn natural(a: &str, b: &str) -> Order {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Order::Equal,
            (None, Some(_)) => return Order::Less,
            (Some(_), None) => return Order::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let trim = |s: &[u8]| {
                    let z = s.iter().take_while(|&&c| c == b'0').count();
                    s[z..].to_vec()
                };
                let (da, db) = (trim(&a[..na]), trim(&b[..nb]));
                let o = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
                if o != Order::Equal {
                    return o;
                }
                (a, b) = (&a[na..], &b[nb..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

/// True when a process this one can see has `path` open for writing (Linux: the links in
/// `/proc/PID/fd` and the access mode in `/proc/PID/fdinfo`). Processes whose descriptors are
/// hidden (other users, without root) do not count.
fn open_for_writing(path: &Path) -> bool {
    let Ok(target) = path.canonicalize() else {
        return false;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).ok().as_deref() != Some(target.as_path()) {
                continue;
            }
            let info = p.path().join("fdinfo").join(fd.file_name());
            let flags = std::fs::read_to_string(info).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            });
            // O_ACCMODE: 0 is read-only; write-only and read-write both write.
            if flags.is_some_and(|f| f & 0o3 != 0) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_names_of_rotating_writers_are_recognised() {
        assert_eq!(
            capture_identity("mail-20261207085000.pcap"),
            Some("mail-20261207085000.pcap")
        );
        assert_eq!(
            capture_identity("ring_00001_20261207085000.pcapng"),
            Some("ring_00001_20261207085000.pcapng")
        );
        assert_eq!(capture_identity("mail.pcap12"), Some("mail.pcap12"));
        assert_eq!(capture_identity("x.pcap.gz"), Some("x.pcap"));
        assert_eq!(capture_identity("x.pcapng.zst"), Some("x.pcapng"));
        assert_eq!(capture_identity("1417000000.pcap"), Some("1417000000.pcap"));
        assert_eq!(capture_identity(".x.pcap.tmp"), None);
        assert_eq!(capture_identity(".x.pcap"), None);
        assert_eq!(capture_identity("notes.txt"), None);
        assert_eq!(capture_identity(".pcap"), None);
        assert_eq!(capture_identity("x.pcap.part"), None);
    }

    #[test]
    fn natural_order_is_time_order_for_counts_and_stamps() {
        let mut names = vec![
            "mail.pcap10",
            "mail.pcap2",
            "mail.pcap",
            "mail.pcap1",
            "ring_00010_20261207090000.pcapng",
            "ring_00009_20261207085900.pcapng",
        ];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(
            names,
            vec![
                "mail.pcap",
                "mail.pcap1",
                "mail.pcap2",
                "mail.pcap10",
                "ring_00009_20261207085900.pcapng",
                "ring_00010_20261207090000.pcapng",
            ]
        );
    }

    #[test]
    fn a_file_open_for_writing_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.pcap");
        let file = std::fs::File::create(&path).unwrap();
        assert!(open_for_writing(&path));
        drop(file);
        assert!(!open_for_writing(&path));
        let _read = std::fs::File::open(&path).unwrap();
        assert!(!open_for_writing(&path));
    }
}
