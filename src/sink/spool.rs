//! The disk spool: batches that ClickHouse could not take wait here, in order, until it can.
//! One file per batch (`<seq>.<table>.<rows>.json.zst`: the rows as JSON, zstd-compressed),
//! written to a temporary name, synced and renamed, so a crash leaves either a whole batch or
//! none. The directory is locked while a run uses it, survives the run, and is replayed first
//! at the next start. Its size is bounded: a batch that would pass the bound is refused and the
//! caller counts it as dropped.

use super::rows::{Rows, TABLES};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Spool failures.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the spool.
    #[error("spool {0} is in use by another stripwatch process")]
    Locked(PathBuf),
    /// The batch would make the spool larger than its bound.
    #[error("spool {path} is full ({bytes} of {max} bytes used)")]
    Full {
        /// The directory.
        path: PathBuf,
        /// Bytes in use.
        bytes: u64,
        /// The bound.
        max: u64,
    },
    /// A spooled batch cannot be read back (moved aside to `corrupt/`).
    #[error("spool file {path} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One spooled batch.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Order of arrival.
    pub seq: u64,
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Rows in it.
    pub rows: u64,
    /// Its table's position in `TABLES`.
    pub table: usize,
}

/// An open, locked spool directory.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    next_seq: u64,
    bytes: u64,
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `<seq>.<table>.<rows>.json.zst`.
fn parse_name(name: &str) -> Option<(u64, usize, u64)> {
    let stem = name.strip_suffix(".json.zst")?;
    let mut parts = stem.split('.');
    let seq = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    let table = TABLES.iter().position(|t| *t == name)?;
    let rows = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((seq, table, rows))
}

impl Spool {
    /// Opens (creating) `dir`, takes its lock, removes half-written files and lists the
    /// batches left by earlier runs, oldest first.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let item = item.map_err(io_err(dir))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                // A batch whose write never finished: its rows were never acknowledged by the
                // spool, so the writer still counted them as pending and they are not lost
                // here; the half file is only garbage.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if let Some((seq, table, rows)) = parse_name(&name) {
                let bytes = item.metadata().map_err(io_err(&path))?.len();
                entries.push(Entry {
                    seq,
                    path,
                    bytes,
                    rows,
                    table,
                });
            }
        }
        entries.sort_by_key(|e| e.seq);
        let bytes = entries.iter().map(|e| e.bytes).sum();
        let next_seq = entries.last().map_or(0, |e| e.seq + 1);
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            entries: entries.into(),
            next_seq,
            bytes,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// No batch waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Rows waiting.
    pub fn rows(&self) -> u64 {
        self.entries.iter().map(|e| e.rows).sum()
    }

    /// Bytes used.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends a batch. Refuses it (`Full`) when it would pass the bound; the spool is
    /// unchanged then.
    pub fn push(&mut self, rows: &Rows) -> Result<(), SpoolError> {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).map_err(io_err(&self.dir))?;
        serde_json::to_writer(&mut enc, rows)
            .map_err(|e| io_err(&self.dir)(std::io::Error::other(e)))?;
        let data = enc.finish().map_err(io_err(&self.dir))?;
        let size = data.len() as u64;
        if self.bytes + size > self.max_bytes {
            return Err(SpoolError::Full {
                path: self.dir.clone(),
                bytes: self.bytes,
                max: self.max_bytes,
            });
        }
        let seq = self.next_seq;
        let name = format!("{seq:020}.{}.{}.json.zst", TABLES[rows.index()], rows.len());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        let written = f.write_all(&data).and_then(|_| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.next_seq += 1;
        self.bytes += size;
        self.entries.push_back(Entry {
            seq,
            path,
            bytes: size,
            rows: rows.len() as u64,
            table: rows.index(),
        });
        Ok(())
    }

    /// The oldest batch, if any.
    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    /// Reads the oldest batch back. A file that cannot be read back is `Corrupt`: call
    /// `quarantine_front` to move it aside.
    pub fn load_front(&self) -> Option<Result<Rows, SpoolError>> {
        let e = self.entries.front()?;
        Some(File::open(&e.path).map_err(io_err(&e.path)).and_then(|f| {
            let dec = zstd::stream::Decoder::new(BufReader::new(f)).map_err(|err| {
                SpoolError::Corrupt {
                    path: e.path.clone(),
                    reason: err.to_string(),
                }
            })?;
            serde_json::from_reader::<_, Rows>(BufReader::new(dec)).map_err(|err| {
                SpoolError::Corrupt {
                    path: e.path.clone(),
                    reason: err.to_string(),
                }
            })
        }))
    }

    /// Forgets the oldest batch (it was delivered): deletes its file.
    pub fn pop_front(&mut self) -> Result<(), SpoolError> {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.bytes;
            std::fs::remove_file(&e.path).map_err(io_err(&e.path))?;
        }
        Ok(())
    }

    /// Moves the oldest batch to `corrupt/` (kept for a person to look at, never replayed);
    /// returns its rows count.
    pub fn quarantine_front(&mut self) -> Result<u64, SpoolError> {
        let Some(e) = self.entries.pop_front() else {
            return Ok(0);
        };
        self.bytes -= e.bytes;
        let dir = self.dir.join("corrupt");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let to = dir.join(e.path.file_name().unwrap_or_default());
        std::fs::rename(&e.path, &to).map_err(io_err(&to))?;
        Ok(e.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::rows::CertificateRow;

    fn cert(fp: &str) -> CertificateRow {
        CertificateRow {
            fingerprint: fp.into(),
            spki_sha256: "s".into(),
            subject: "CN=x".into(),
            issuer: "CN=y".into(),
            subject_cn: None,
            san_dns: vec!["a.example".into()],
            not_before: 1,
            not_after: 2,
            serial: "01".into(),
            key_type: "EC".into(),
            key_bits: Some(256),
            signature_algorithm: "ecdsa".into(),
            self_signed: false,
            is_ca: false,
            first_seen: 3,
            first_seen_usec: 4,
            last_seen: 5,
            last_seen_usec: 6,
            sessions: 7,
            servers: vec![],
            leaf: true,
            sensor: "t".into(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sw-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn batches_survive_reopening_in_order() {
        let d = dir("order");
        {
            let mut s = Spool::open(&d, 1 << 20).unwrap();
            s.push(&Rows::Certificates(vec![cert("a")])).unwrap();
            s.push(&Rows::Certificates(vec![cert("b"), cert("c")]))
                .unwrap();
            assert_eq!(s.rows(), 3);
            // A second process cannot take the same spool.
            assert!(matches!(
                Spool::open(&d, 1 << 20),
                Err(SpoolError::Locked(_))
            ));
        }
        std::fs::write(
            d.join("00000000000000000009.sessions.5.json.zst.tmp"),
            b"half",
        )
        .unwrap();
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!((s.len(), s.rows()), (2, 3));
        assert_eq!(
            s.load_front().unwrap().unwrap(),
            Rows::Certificates(vec![cert("a")])
        );
        s.pop_front().unwrap();
        assert_eq!(s.load_front().unwrap().unwrap().len(), 2);
        s.push(&Rows::Certificates(vec![cert("d")])).unwrap();
        assert_eq!(s.entries.back().unwrap().seq, 2);
        assert!(
            !d.join("00000000000000000009.sessions.5.json.zst.tmp")
                .exists()
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_past_the_bound_and_quarantines_garbage() {
        let d = dir("bound");
        let mut s = Spool::open(&d, 300).unwrap();
        s.push(&Rows::Certificates(vec![cert("a")])).unwrap();
        let many: Vec<_> = (0..50).map(|i| cert(&format!("fp{i}"))).collect();
        assert!(matches!(
            s.push(&Rows::Certificates(many)),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!(s.len(), 1);
        std::fs::write(&s.front().unwrap().path, b"not zstd").unwrap();
        assert!(matches!(
            s.load_front().unwrap(),
            Err(SpoolError::Corrupt { .. })
        ));
        assert_eq!(s.quarantine_front().unwrap(), 1);
        assert!(s.is_empty());
        assert_eq!(std::fs::read_dir(d.join("corrupt")).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
