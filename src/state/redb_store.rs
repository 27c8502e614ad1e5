//! The local baseline: one `redb` file (an embedded, crash-safe B-tree store) with four tables.
//! Keys are text so a dump reads naturally; values are `Seen` as small JSON objects.
//!
//! | table | key | meaning |
//! |---|---|---|
//! | `offered` | server address | the server offered STARTTLS |
//! | `keys` | server address, space, SPKI SHA-256 | the server presented this key |
//! | `mx` | domain, space, sorted MX hosts joined by `,` | the domain was answered with this set |
//! | `signed` | record type, space, name | the name was answered with RRSIG |
//! | `sts` | domain, space, policy id | `_mta-sts.<domain>` was answered with `v=STSv1; id=<id>` |
//!
//! Entries last seen longer than the retention before the newest capture time are removed at
//! each save. Deleting the file resets everything.
//!
//! The same file also holds `analyze --follow`'s position (`followed`, see `state::followed`),
//! which is not a baseline: no retention applies to it.

use super::{Baseline, Learned, SaveStats, Seen, StateError};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const OFFERED: TableDefinition<&str, &[u8]> = TableDefinition::new("offered");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const MX: TableDefinition<&str, &[u8]> = TableDefinition::new("mx");
const SIGNED: TableDefinition<&str, &[u8]> = TableDefinition::new("signed");
const STS: TableDefinition<&str, &[u8]> = TableDefinition::new("sts");
const TABLES: [(&str, TableDefinition<&str, &[u8]>); 5] = [
    ("offered", OFFERED),
    ("keys", KEYS),
    ("mx", MX),
    ("signed", SIGNED),
    ("sts", STS),
];

/// A baseline kept in a local file.
pub struct StateStore {
    /// Shared with the follow position ([`StateStore::follow_ledger`]): redb opens a file once
    /// per process.
    db: Arc<Database>,
    path: PathBuf,
    retention_us: i64,
    lookup_errors: AtomicU64,
    /// Per table and key, the sightings of this run already added by an earlier `save`: a
    /// long run saves its cumulative learning periodically, and each save adds only what grew.
    saved_counts: HashMap<(usize, String), u64>,
}

/// Entries per table, for `stripwatch state show` and the run summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StateSummary {
    /// The store's path.
    pub path: String,
    /// Servers known to offer STARTTLS.
    pub offered: u64,
    /// Server keys.
    pub keys: u64,
    /// Domain MX sets.
    pub mx: u64,
    /// Signed names.
    pub signed: u64,
    /// MTA-STS policy ids of domains.
    pub sts: u64,
}

impl StateStore {
    /// Opens (or creates) the store at `path`; entries not seen for `retention_us` of capture
    /// time are dropped at each save.
    pub fn open(path: &Path, retention_us: i64) -> Result<StateStore, StateError> {
        let db = Arc::new(Database::create(path).map_err(|e| store_error(path, e))?);
        let store = StateStore {
            db,
            path: path.to_path_buf(),
            retention_us,
            lookup_errors: AtomicU64::new(0),
            saved_counts: HashMap::new(),
        };
        // Create the tables up front so readers never meet a missing table.
        let w = store.db.begin_write().map_err(|e| store.err(e))?;
        for (_, t) in TABLES {
            w.open_table(t).map_err(|e| store.err(e))?;
        }
        w.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// The position of `analyze --follow` in this file, to be used beside the baseline (on
    /// another thread).
    pub fn follow_ledger(&self) -> Result<super::FollowLedger, StateError> {
        super::FollowLedger::open(self.db.clone(), &self.path)
    }

    fn err(&self, e: impl Into<redb::Error>) -> StateError {
        store_error(&self.path, e)
    }

    fn get(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Option<Seen> {
        let found = (|| -> Result<Option<Seen>, redb::Error> {
            let r = self.db.begin_read()?;
            let t = r.open_table(table)?;
            Ok(t.get(key)?
                .and_then(|v| serde_json::from_slice(v.value()).ok()))
        })();
        found.unwrap_or_else(|_| {
            self.lookup_errors.fetch_add(1, Ordering::Relaxed);
            None
        })
    }

    /// Entries whose key starts with `prefix` (which ends in a space), with the rest of the key.
    fn with_prefix(
        &self,
        table: TableDefinition<&str, &[u8]>,
        prefix: &str,
    ) -> Vec<(String, Seen)> {
        let end = format!("{}!", &prefix[..prefix.len() - 1]);
        let found = (|| -> Result<Vec<(String, Seen)>, redb::Error> {
            let r = self.db.begin_read()?;
            let t = r.open_table(table)?;
            let mut out = Vec::new();
            for item in t.range(prefix..end.as_str())?.take(64) {
                let (k, v) = item?;
                if let Ok(seen) = serde_json::from_slice(v.value()) {
                    out.push((k.value()[prefix.len()..].to_string(), seen));
                }
            }
            Ok(out)
        })();
        found.unwrap_or_else(|_| {
            self.lookup_errors.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        })
    }

    /// Entries per table.
    pub fn summary(&self) -> Result<StateSummary, StateError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut n = [0u64; 5];
        for (i, (_, t)) in TABLES.iter().enumerate() {
            n[i] = r
                .open_table(*t)
                .and_then(|t| t.len().map_err(Into::into))
                .map_err(|e| self.err(e))?;
        }
        Ok(StateSummary {
            path: self.path.display().to_string(),
            offered: n[0],
            keys: n[1],
            mx: n[2],
            signed: n[3],
            sts: n[4],
        })
    }

    /// Writes every entry as one JSON object per line (`table`, `key`, first/last seen, count).
    pub fn dump(&self, out: &mut dyn Write) -> Result<(), StateError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        for (name, t) in TABLES {
            let t = r.open_table(t).map_err(|e| self.err(e))?;
            for item in t.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                let seen: Seen =
                    serde_json::from_slice(v.value()).map_err(|_| StateError::Corrupt {
                        path: self.path.display().to_string(),
                        key: k.value().to_string(),
                    })?;
                let line = serde_json::json!({
                    "table": name, "key": k.value(),
                    "first_seen": crate::util::rfc3339_micros(seen.first_us),
                    "last_seen": crate::util::rfc3339_micros(seen.last_us),
                    "count": seen.count,
                });
                let _ = writeln!(out, "{line}");
            }
        }
        Ok(())
    }
}

pub(super) fn store_error(path: &Path, e: impl Into<redb::Error>) -> StateError {
    StateError::Store {
        path: path.display().to_string(),
        source: Box::new(e.into()),
    }
}

fn merge_into(t: &mut redb::Table<&str, &[u8]>, key: &str, seen: Seen) -> Result<(), redb::Error> {
    let old: Option<Seen> = t
        .get(key)?
        .and_then(|v| serde_json::from_slice(v.value()).ok());
    let new = old.map_or(seen, |o| o.merge(seen));
    let bytes = serde_json::to_vec(&new).unwrap_or_default();
    t.insert(key, bytes.as_slice())?;
    Ok(())
}

impl Baseline for StateStore {
    fn starttls_offered(&self, server: IpAddr) -> Option<Seen> {
        self.get(OFFERED, &server.to_string())
    }

    fn server_keys(&self, server: IpAddr) -> Vec<(String, Seen)> {
        self.with_prefix(KEYS, &format!("{server} "))
    }

    fn mx_sets(&self, domain: &str) -> Vec<(Vec<String>, Seen)> {
        self.with_prefix(MX, &format!("{domain} "))
            .into_iter()
            .map(|(set, seen)| (set.split(',').map(str::to_string).collect(), seen))
            .collect()
    }

    fn signed_name(&self, name: &str, qtype: &str) -> Option<Seen> {
        self.get(SIGNED, &format!("{qtype} {name}"))
    }

    fn sts_ids(&self, domain: &str) -> Vec<(String, Seen)> {
        self.with_prefix(STS, &format!("{domain} "))
    }

    fn save(&mut self, learned: &Learned) -> Result<SaveStats, StateError> {
        let mut stats = SaveStats::default();
        let newest = learned
            .offered
            .iter()
            .map(|e| e.1.last_us)
            .chain(learned.keys.iter().map(|e| e.2.last_us))
            .chain(learned.mx.iter().map(|e| e.2.last_us))
            .chain(learned.signed.iter().map(|e| e.2.last_us))
            .chain(learned.sts.iter().map(|e| e.2.last_us))
            .max();
        let w = self.db.begin_write().map_err(|e| self.err(e))?;
        let path = self.path.clone();
        let saved_counts = &mut self.saved_counts;
        let mut table_index = 0;
        let mut write = |def, entries: Vec<(String, Seen)>| -> Result<(), StateError> {
            let mut t = w.open_table(def).map_err(|e| store_error(&path, e))?;
            for (key, mut seen) in entries {
                let before = saved_counts.insert((table_index, key.clone()), seen.count);
                seen.count = seen.count.saturating_sub(before.unwrap_or(0));
                merge_into(&mut t, &key, seen).map_err(|e| store_error(&path, e))?;
                stats.written += 1;
            }
            table_index += 1;
            Ok(())
        };
        write(
            OFFERED,
            learned
                .offered
                .iter()
                .map(|(ip, s)| (ip.to_string(), *s))
                .collect(),
        )?;
        write(
            KEYS,
            learned
                .keys
                .iter()
                .map(|(ip, spki, s)| (format!("{ip} {spki}"), *s))
                .collect(),
        )?;
        write(
            MX,
            learned
                .mx
                .iter()
                .map(|(d, set, s)| (format!("{d} {}", set.join(",")), *s))
                .collect(),
        )?;
        write(
            SIGNED,
            learned
                .signed
                .iter()
                .map(|(n, q, s)| (format!("{q} {n}"), *s))
                .collect(),
        )?;
        write(
            STS,
            learned
                .sts
                .iter()
                .map(|(d, id, s)| (format!("{d} {id}"), *s))
                .collect(),
        )?;
        if let Some(newest) = newest {
            let horizon = newest.saturating_sub(self.retention_us);
            for (_, def) in TABLES {
                let mut t = w.open_table(def).map_err(|e| self.err(e))?;
                let before = t.len().map_err(|e| self.err(e))?;
                t.retain(|_, v| {
                    serde_json::from_slice::<Seen>(v).is_ok_and(|s| s.last_us >= horizon)
                })
                .map_err(|e| self.err(e))?;
                stats.expired += before - t.len().map_err(|e| self.err(e))?;
            }
        }
        w.commit().map_err(|e| self.err(e))?;
        Ok(stats)
    }

    fn lookup_errors(&self) -> u64 {
        self.lookup_errors.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_run_saves_the_next_run_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let server: IpAddr = "198.51.100.7".parse().unwrap();
        {
            let mut s = StateStore::open(&path, i64::MAX).unwrap();
            assert!(s.starttls_offered(server).is_none());
            let learned = Learned {
                offered: vec![(server, Seen::span(10, 20, 2))],
                keys: vec![(server, "ab12".into(), Seen::span(10, 20, 2))],
                mx: vec![(
                    "example.com".into(),
                    vec!["mx1.example.com".into(), "mx2.example.com".into()],
                    Seen::span(5, 6, 1),
                )],
                signed: vec![("example.com".into(), "MX".into(), Seen::span(5, 6, 1))],
                sts: vec![("example.com".into(), "20260301".into(), Seen::span(5, 6, 1))],
            };
            let st = s.save(&learned).unwrap();
            assert_eq!(st.written, 5);
            // The same run's learning saved again (periodically) counts once.
            s.save(&learned).unwrap();
        }
        let s = StateStore::open(&path, i64::MAX).unwrap();
        assert_eq!(s.starttls_offered(server), Some(Seen::span(10, 20, 2)));
        assert_eq!(
            s.server_keys(server),
            vec![("ab12".to_string(), Seen::span(10, 20, 2))]
        );
        assert_eq!(
            s.mx_sets("example.com")[0].0,
            vec!["mx1.example.com", "mx2.example.com"]
        );
        assert!(
            s.mx_sets("example.co").is_empty(),
            "prefix must end at the domain"
        );
        assert!(s.signed_name("example.com", "MX").is_some());
        assert!(s.signed_name("example.com", "A").is_none());
        assert_eq!(
            s.sts_ids("example.com"),
            vec![("20260301".to_string(), Seen::span(5, 6, 1))]
        );
        assert!(s.sts_ids("example.co").is_empty());
        let summary = s.summary().unwrap();
        assert_eq!(
            (summary.offered, summary.keys, summary.mx, summary.signed),
            (1, 1, 1, 1)
        );
        assert_eq!(summary.sts, 1);
    }

    #[test]
    fn saving_the_same_run_again_adds_only_what_grew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut store = StateStore::open(&path, i64::MAX).unwrap();
        let learned = |count, last_us| Learned {
            offered: vec![(ip, Seen::span(1, last_us, count))],
            ..Learned::default()
        };
        store.save(&learned(3, 10)).unwrap();
        store.save(&learned(3, 10)).unwrap();
        store.save(&learned(5, 20)).unwrap();
        assert_eq!(store.starttls_offered(ip), Some(Seen::span(1, 20, 5)));
        // The next run starts counting afresh and adds to what is stored.
        drop(store);
        let mut store = StateStore::open(&path, i64::MAX).unwrap();
        store.save(&learned(2, 30)).unwrap();
        assert_eq!(store.starttls_offered(ip), Some(Seen::span(1, 30, 7)));
    }

    #[test]
    fn entries_older_than_the_retention_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mut s = StateStore::open(&path, 100).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        s.save(&Learned {
            offered: vec![(a, Seen::span(0, 10, 1))],
            ..Learned::default()
        })
        .unwrap();
        let st = s
            .save(&Learned {
                offered: vec![(b, Seen::span(500, 500, 1))],
                ..Learned::default()
            })
            .unwrap();
        assert_eq!(st.expired, 1);
        assert!(s.starttls_offered(a).is_none());
        assert!(s.starttls_offered(b).is_some());
    }

    #[test]
    fn a_file_that_is_not_a_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, b"this is not a redb file at all, just text").unwrap();
        assert!(StateStore::open(&path, 1).is_err());
    }
}
