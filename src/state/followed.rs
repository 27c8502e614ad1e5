//! Which files of a followed directory were read (`analyze --follow` with `--state`), kept in
//! the `followed` table of the state file, so that a restart goes on where the last run stopped
//! and never reads a file twice. It lives beside the baseline because it is the other thing a
//! run must remember to be continued, and one file is easier to keep than two.
//!
//! | table | key | value |
//! |---|---|---|
//! | `followed` | file name (without `.gz`/`.zst`) | `{"packets": N, "done": bool, "at": wall-clock time}` |
//!
//! Each change is committed (synced) before the next file is read: a crash loses at most the
//! records of what was read but not yet written, never reads a file again.

use super::StateError;
use super::redb_store::store_error;
use crate::capture::follow::{Ledger, Position};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FOLLOWED: TableDefinition<&str, &[u8]> = TableDefinition::new("followed");

/// One entry as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    packets: u64,
    done: bool,
    /// When it was recorded (RFC 3339, wall clock), for a person reading a dump.
    at: String,
}

/// The follow position in a state file (a handle on the store's own database).
pub struct FollowLedger {
    db: Arc<Database>,
    path: PathBuf,
}

impl FollowLedger {
    /// The ledger in the open database `db` of the state file `path` (its table made if new).
    pub(super) fn open(db: Arc<Database>, path: &Path) -> Result<FollowLedger, StateError> {
        let err = |e: redb::Error| store_error(path, e);
        let w = db.begin_write().map_err(|e| err(e.into()))?;
        w.open_table(FOLLOWED).map_err(|e| err(e.into()))?;
        w.commit().map_err(|e| err(e.into()))?;
        Ok(FollowLedger {
            db,
            path: path.to_path_buf(),
        })
    }
}

impl Ledger for FollowLedger {
    fn position(&self, name: &str) -> Result<Option<Position>, String> {
        let read = || -> Result<Option<Vec<u8>>, redb::Error> {
            let r = self.db.begin_read()?;
            let t = r.open_table(FOLLOWED)?;
            Ok(t.get(name)?.map(|v| v.value().to_vec()))
        };
        let Some(bytes) = read().map_err(|e| store_error(&self.path, e).to_string())? else {
            return Ok(None);
        };
        let s: Stored = serde_json::from_slice(&bytes).map_err(|_| {
            StateError::Corrupt {
                path: self.path.display().to_string(),
                key: name.to_string(),
            }
            .to_string()
        })?;
        Ok(Some(Position {
            packets: s.packets,
            done: s.done,
        }))
    }

    fn record(&mut self, name: &str, position: Position) -> Result<(), String> {
        let stored = Stored {
            packets: position.packets,
            done: position.done,
            at: crate::util::rfc3339_micros(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64),
            ),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
        let write = || -> Result<(), redb::Error> {
            let w = self.db.begin_write()?;
            w.open_table(FOLLOWED)?.insert(name, bytes.as_slice())?;
            w.commit()?;
            Ok(())
        };
        write().map_err(|e| store_error(&self.path, e).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    #[test]
    fn a_position_outlives_the_store_and_sits_beside_the_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = StateStore::open(&path, i64::MAX).unwrap();
            let mut ledger = store.follow_ledger().unwrap();
            assert_eq!(ledger.position("a.pcap").unwrap(), None);
            let done = Position {
                packets: 7,
                done: true,
            };
            ledger.record("a.pcap", done).unwrap();
            let half = Position {
                packets: 3,
                done: false,
            };
            ledger.record("b.pcap", half).unwrap();
        }
        let store = StateStore::open(&path, i64::MAX).unwrap();
        let ledger = store.follow_ledger().unwrap();
        assert_eq!(
            ledger.position("a.pcap").unwrap().map(|p| p.done),
            Some(true)
        );
        assert_eq!(
            ledger.position("b.pcap").unwrap().map(|p| p.packets),
            Some(3)
        );
        assert_eq!(
            store.summary().unwrap().offered,
            0,
            "the baseline is untouched"
        );
    }
}
