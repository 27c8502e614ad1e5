//! Baselines that outlive a run. A clean deletion of the STARTTLS line looks exactly like a
//! server that never offered it; only history tells them apart. The same holds for a changed
//! server key and for an MX answer nobody else received. This module is the one interface
//! behind which that history lives: the rules ask it questions (`Baseline`) and hand it what a
//! run learned (`Baseline::save`). Today the history is a local embedded store
//! (`redb_store`); a store shared between sensors can implement the same trait.

mod followed;
mod redb_store;

pub use followed::FollowLedger;
pub use redb_store::{StateStore, StateSummary};

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use thiserror::Error;

/// When something was seen: capture times of the first and last sighting, and how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// First sighting, microseconds since the epoch (capture time).
    pub first_us: i64,
    /// Last sighting.
    pub last_us: i64,
    /// Sightings (sessions, answers or observers, depending on the table).
    pub count: u64,
}

impl Seen {
    /// A span of sightings.
    pub fn span(first_us: i64, last_us: i64, count: u64) -> Seen {
        Seen {
            first_us,
            last_us,
            count,
        }
    }

    /// Both histories in one.
    pub fn merge(self, o: Seen) -> Seen {
        Seen {
            first_us: self.first_us.min(o.first_us),
            last_us: self.last_us.max(o.last_us),
            count: self.count.saturating_add(o.count),
        }
    }
}

/// Who saw a fact in a history shared between sensors: the sensor whose sighting is the latest,
/// and when (capture time). A finding convicted by that history names it, so that an analyst
/// can go to the sensor that saw the other side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    /// The sensor's name (`--sensor`).
    pub sensor: String,
    /// Its last sighting, microseconds since the epoch.
    pub last_us: i64,
}

/// A fact a baseline may hold, to ask who saw it.
#[derive(Clone, Copy, Debug)]
pub enum Fact<'a> {
    /// The server offered STARTTLS.
    Offered(IpAddr),
    /// The server presented this key (SPKI SHA-256, hex).
    Key(IpAddr, &'a str),
    /// The domain was answered with this MX set.
    Mx(&'a str, &'a [String]),
    /// The name and type were answered with signatures.
    Signed(&'a str, &'a str),
    /// The domain published this MTA-STS policy id (`v=STSv1; id=…` in `_mta-sts.<domain>`).
    Sts(&'a str, &'a str),
}

/// What one run learned, handed to the store at the end (and, in long runs, periodically).
#[derive(Clone, Debug, Default)]
pub struct Learned {
    /// Servers that offered STARTTLS.
    pub offered: Vec<(IpAddr, Seen)>,
    /// Public keys (SPKI SHA-256, hex) servers presented.
    pub keys: Vec<(IpAddr, String, Seen)>,
    /// MX sets (sorted exchange names) answered per domain.
    pub mx: Vec<(String, Vec<String>, Seen)>,
    /// Names (and record types) answered with RRSIG to a DO query.
    pub signed: Vec<(String, String, Seen)>,
    /// MTA-STS policy ids (`v=STSv1; id=...`) domains published in `_mta-sts` TXT answers.
    pub sts: Vec<(String, String, Seen)>,
}

/// What a save did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SaveStats {
    /// Entries written (new or updated).
    pub written: u64,
    /// Entries removed because they were last seen longer ago than the retention.
    pub expired: u64,
}

/// The store failed; the run reports it and stops (a baseline silently lost would turn
/// `starttls-missing` into `starttls-not-supported` without anyone noticing).
#[derive(Debug, Error)]
pub enum StateError {
    /// The embedded database failed.
    #[error("state {path}: {source}")]
    Store {
        /// The store's path.
        path: String,
        /// The cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored value could not be read back.
    #[error("state {path}: corrupt entry {key}")]
    Corrupt {
        /// The store's path.
        path: String,
        /// The entry.
        key: String,
    },
}

/// History from earlier runs, asked by the rules.
pub trait Baseline: Send {
    /// When `server` was seen offering STARTTLS.
    fn starttls_offered(&self, server: IpAddr) -> Option<Seen>;
    /// The keys `server` presented (SPKI SHA-256, hex).
    fn server_keys(&self, server: IpAddr) -> Vec<(String, Seen)>;
    /// The MX sets `domain` was answered with.
    fn mx_sets(&self, domain: &str) -> Vec<(Vec<String>, Seen)>;
    /// When `name`/`qtype` was answered with signatures.
    fn signed_name(&self, name: &str, qtype: &str) -> Option<Seen>;
    /// The MTA-STS policy ids `domain` published in earlier runs (`mta-sts-txt-missing`,
    /// `mta-sts-plaintext`). A history that does not keep them knows none.
    fn sts_ids(&self, _domain: &str) -> Vec<(String, Seen)> {
        Vec::new()
    }
    /// Adds what a run learned. A long run calls it periodically with everything it learned so
    /// far; the sightings counted by an earlier call of the same run are not added again.
    fn save(&mut self, learned: &Learned) -> Result<SaveStats, StateError>;
    /// Lookups that failed and were answered with "nothing known" (counted, never fatal mid-run).
    fn lookup_errors(&self) -> u64 {
        0
    }
    /// Which sensor saw `fact` last, when the history is shared between sensors (a local
    /// history has only this sensor's runs and names nobody).
    fn witness(&self, _fact: Fact<'_>) -> Option<Witness> {
        None
    }
}

/// The evidence fields that name a fact's witness: `seen_by_sensor` and `seen_by_sensor_at`,
/// added to a finding's evidence object (nothing when there is no witness).
pub fn add_witness(evidence: &mut serde_json::Value, witness: Option<Witness>) {
    if let (Some(w), Some(obj)) = (witness, evidence.as_object_mut()) {
        obj.insert("seen_by_sensor".into(), w.sensor.into());
        obj.insert(
            "seen_by_sensor_at".into(),
            crate::util::rfc3339_micros(w.last_us).into(),
        );
    }
}

/// No history: every run stands alone.
pub struct NoBaseline;

impl Baseline for NoBaseline {
    fn starttls_offered(&self, _server: IpAddr) -> Option<Seen> {
        None
    }
    fn server_keys(&self, _server: IpAddr) -> Vec<(String, Seen)> {
        Vec::new()
    }
    fn mx_sets(&self, _domain: &str) -> Vec<(Vec<String>, Seen)> {
        Vec::new()
    }
    fn signed_name(&self, _name: &str, _qtype: &str) -> Option<Seen> {
        None
    }
    fn save(&mut self, _learned: &Learned) -> Result<SaveStats, StateError> {
        Ok(SaveStats::default())
    }
}
