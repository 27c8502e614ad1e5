//! A baseline shared between sensors through ClickHouse (`--shared-baseline`). A deleted
//! STARTTLS line is told from "never offered" only by history, and the history that convicts
//! it may have been seen by another sensor: the server offered STARTTLS to sensor A and shows
//! none to sensor B. Every sensor already writes its sessions, DNS transactions and
//! certificates to ClickHouse; this module reads the per-server facts back from those same
//! tables (STARTTLS offered, server keys, MX sets, signed names, MTA-STS policy ids), so there
//! is no second write path: a sensor's own observations reach the others through its normal
//! inserts.
//!
//! It lives with the sinks because it reads the tables they write, through the same target.
//! The history is loaded at start (a failure stops the run, as a broken `--state` does) and,
//! with a refresh interval, reloaded by a thread of its own; a failed reload keeps the previous
//! history and is counted. Each fact remembers the sensor that saw it last and when, so that a
//! finding it convicts can name that sensor.

use super::target::{Target, error_chain};
use crate::detect::dns_judge::{canonical, mx_set};
use crate::dns::sts::sts_id;
use crate::state::{Baseline, Fact, Learned, SaveStats, Seen, StateError, Witness};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long one load may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

// Each query reads at most 1,000,000 rows (its LIMIT), so the history's memory stays bounded
// (a few hundred bytes a fact).

/// Microseconds of capture time from a `DateTime` column and its `_usec` companion.
macro_rules! micros {
    ($col:literal) => {
        concat!("toInt64(toUInt32(", $col, ")) * 1000000 + ", $col, "_usec")
    };
}

/// Servers that offered STARTTLS.
const OFFERED: &str = concat!(
    "SELECT server_ip AS server, min(t) AS first_us, max(t) AS last_us, count() AS n, \
     argMax(sensor, t) AS sensor FROM (SELECT server_ip, sensor, ",
    micros!("ts"),
    " AS t FROM sessions FINAL WHERE starttls_offered = 1) GROUP BY server_ip LIMIT 1000000"
);

/// Keys (SPKI SHA-256) of the leaf certificates servers presented.
const KEYS: &str = concat!(
    "SELECT server, spki, min(f) AS first_us, max(l) AS last_us, sum(n) AS n, \
     argMax(sensor, l) AS sensor FROM (SELECT servers, spki_sha256 AS spki, sessions AS n, \
     sensor, ",
    micros!("first_seen"),
    " AS f, ",
    micros!("last_seen"),
    " AS l FROM certificates FINAL WHERE leaf = 1) ARRAY JOIN servers AS server \
     GROUP BY server, spki LIMIT 1000000"
);

/// MX answers, grouped by their records (the set is made from them as the DNS judge makes it).
const MX: &str = concat!(
    "SELECT qname, names, rtypes, datas, min(t) AS first_us, max(t) AS last_us, count() AS n, \
     argMax(sensor, t) AS sensor FROM (SELECT qname, answers.name AS names, \
     answers.rtype AS rtypes, answers.data AS datas, sensor, ",
    micros!("ts"),
    " AS t FROM dns FINAL WHERE qtype = 'MX' AND has(answers.rtype, 'MX')) \
     GROUP BY qname, names, rtypes, datas LIMIT 1000000"
);

/// Names answered with signatures to a query with the DO bit.
const SIGNED: &str = concat!(
    "SELECT qname, qtype, min(t) AS first_us, max(t) AS last_us, count() AS n, \
     argMax(sensor, t) AS sensor FROM (SELECT qname, qtype, sensor, ",
    micros!("ts"),
    " AS t FROM dns FINAL WHERE rrsig = 1 AND query_do = 1) GROUP BY qname, qtype LIMIT 1000000"
);

/// `_mta-sts.<domain>` TXT answers holding a TXT record, grouped by their records (the policy
/// id is read from them as the MTA-STS judge reads it: one valid `v=STSv1` record).
const STS: &str = concat!(
    "SELECT qname, names, rtypes, datas, min(t) AS first_us, max(t) AS last_us, count() AS n, \
     argMax(sensor, t) AS sensor FROM (SELECT qname, answers.name AS names, \
     answers.rtype AS rtypes, answers.data AS datas, sensor, ",
    micros!("ts"),
    " AS t FROM dns FINAL WHERE qtype = 'TXT' AND substring(qname, 1, 9) = '_mta-sts.' \
     AND has(answers.rtype, 'TXT')) GROUP BY qname, names, rtypes, datas LIMIT 1000000"
);

/// Loading the shared history failed.
#[derive(Debug, Error)]
pub enum SharedBaselineError {
    /// The async runtime could not start.
    #[error("cannot start the ClickHouse client runtime: {0}")]
    Runtime(std::io::Error),
    /// A query failed or timed out.
    #[error("shared baseline from ClickHouse at {url}: {what}: {reason}")]
    Query {
        /// The server.
        url: String,
        /// Which fact.
        what: &'static str,
        /// The cause.
        reason: String,
    },
    /// The refresh thread could not start.
    #[error("cannot start the shared baseline refresh: {0}")]
    Thread(std::io::Error),
}

/// The shared history at one moment.
#[derive(Debug, Default)]
pub struct History {
    offered: HashMap<IpAddr, (Seen, Witness)>,
    keys: HashMap<IpAddr, Vec<(String, Seen, Witness)>>,
    mx: HashMap<String, Vec<(Vec<String>, Seen, Witness)>>,
    signed: HashMap<(String, String), (Seen, Witness)>,
    /// Per domain, the MTA-STS policy ids it published.
    sts: HashMap<String, Vec<(String, Seen, Witness)>>,
}

/// The columns every fact query ends with.
#[derive(Deserialize)]
struct Sighting {
    first_us: i64,
    last_us: i64,
    n: u64,
    sensor: String,
}

impl Sighting {
    fn seen(&self) -> Seen {
        Seen::span(self.first_us, self.last_us, self.n)
    }

    fn witness(&self) -> Witness {
        Witness {
            sensor: self.sensor.clone(),
            last_us: self.last_us,
        }
    }
}

#[derive(Deserialize)]
struct OfferedRow {
    server: String,
    #[serde(flatten)]
    s: Sighting,
}

#[derive(Deserialize)]
struct KeyRow {
    server: String,
    spki: String,
    #[serde(flatten)]
    s: Sighting,
}

#[derive(Deserialize)]
struct MxRow {
    qname: String,
    names: Vec<String>,
    rtypes: Vec<String>,
    datas: Vec<String>,
    #[serde(flatten)]
    s: Sighting,
}

#[derive(Deserialize)]
struct SignedRow {
    qname: String,
    qtype: String,
    #[serde(flatten)]
    s: Sighting,
}

impl History {
    /// Reads the history from the database of `target`: its `sessions`, `certificates` and
    /// `dns` tables (on a cluster, the Distributed tables: every shard).
    pub fn load(target: &Target) -> Result<History, SharedBaselineError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SharedBaselineError::Runtime)?;
        let client = target
            .client()
            .with_setting("output_format_json_quote_64bit_integers", "0");
        let fetch = |what: &'static str, sql: &str| -> Result<Vec<String>, SharedBaselineError> {
            let failed = |reason: String| SharedBaselineError::Query {
                url: target.base_url.clone(),
                what,
                reason,
            };
            let bytes = rt
                .block_on(async {
                    tokio::time::timeout(LOAD_TIMEOUT, async {
                        client
                            .query(sql)
                            .fetch_bytes("JSONEachRow")?
                            .collect()
                            .await
                    })
                    .await
                })
                .map_err(|_| failed(format!("no answer within {} s", LOAD_TIMEOUT.as_secs())))?
                .map_err(|e: clickhouse::error::Error| failed(error_chain(&e)))?;
            let text = String::from_utf8_lossy(&bytes);
            Ok(text.lines().map(str::to_string).collect())
        };
        fn parse<T: for<'de> Deserialize<'de>>(
            lines: Vec<String>,
            what: &'static str,
            url: &str,
        ) -> Result<Vec<T>, SharedBaselineError> {
            lines
                .iter()
                .map(|l| {
                    serde_json::from_str(l).map_err(|e| SharedBaselineError::Query {
                        url: url.to_string(),
                        what,
                        reason: format!("unexpected row {l}: {e}"),
                    })
                })
                .collect()
        }
        let url = target.base_url.as_str();
        let mut h = History::default();
        for r in parse::<OfferedRow>(fetch("STARTTLS offers", OFFERED)?, "STARTTLS offers", url)? {
            if let Ok(ip) = r.server.parse() {
                h.offered.insert(ip, (r.s.seen(), r.s.witness()));
            }
        }
        for r in parse::<KeyRow>(fetch("server keys", KEYS)?, "server keys", url)? {
            if let Ok(ip) = r.server.parse() {
                let (seen, w) = (r.s.seen(), r.s.witness());
                h.keys.entry(ip).or_default().push((r.spki, seen, w));
            }
        }
        for r in parse::<MxRow>(fetch("MX sets", MX)?, "MX sets", url)? {
            let answers = r
                .names
                .iter()
                .zip(&r.rtypes)
                .zip(&r.datas)
                .map(|((n, t), d)| (n.as_str(), t.as_str(), d.as_str()));
            let set = mx_set(&r.qname, answers);
            if set.is_empty() {
                continue;
            }
            let sets = h.mx.entry(canonical(&r.qname)).or_default();
            let (seen, w) = (r.s.seen(), r.s.witness());
            match sets.iter_mut().find(|(s, _, _)| *s == set) {
                Some(known) => {
                    if w.last_us > known.2.last_us {
                        known.2 = w;
                    }
                    known.1 = known.1.merge(seen);
                }
                None => sets.push((set, seen, w)),
            }
        }
        for r in parse::<SignedRow>(fetch("signed names", SIGNED)?, "signed names", url)? {
            h.signed
                .insert((r.qname, r.qtype), (r.s.seen(), r.s.witness()));
        }
        for r in parse::<MxRow>(fetch("MTA-STS ids", STS)?, "MTA-STS ids", url)? {
            let Some(domain) = r.qname.strip_prefix("_mta-sts.") else {
                continue;
            };
            let id = sts_id(
                r.names
                    .iter()
                    .zip(&r.rtypes)
                    .zip(&r.datas)
                    .filter(|((n, t), _)| *t == "TXT" && **n == r.qname)
                    .map(|(_, d)| d.as_str()),
            );
            if id.is_empty() {
                continue;
            }
            let ids = h.sts.entry(domain.to_string()).or_default();
            let (seen, w) = (r.s.seen(), r.s.witness());
            match ids.iter_mut().find(|(i, _, _)| *i == id) {
                Some(known) => {
                    if w.last_us > known.2.last_us {
                        known.2 = w;
                    }
                    known.1 = known.1.merge(seen);
                }
                None => ids.push((id, seen, w)),
            }
        }
        Ok(h)
    }

    /// Facts held (all five kinds together).
    pub fn len(&self) -> usize {
        self.offered.len()
            + self.keys.values().map(Vec::len).sum::<usize>()
            + self.mx.values().map(Vec::len).sum::<usize>()
            + self.signed.len()
            + self.sts.values().map(Vec::len).sum::<usize>()
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shared history as the judges ask it: the latest loaded [`History`], swapped whole by
/// the refresh thread.
///
/// The refresh thread is started lazily, by the first question the judges ask (on the output
/// thread), not by [`SharedBaseline::start`]: `live --user` builds the judges before it drops
/// its privileges, and capabilities are per thread, so a thread spawned then would keep them.
/// When that first question comes later than one interval after the load (a follow that waited
/// for its first file), the history is reloaded first, so the delay stays one interval.
pub struct SharedBaseline {
    current: Arc<RwLock<Arc<History>>>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// The server and the interval, until the refresh thread takes them.
    refresh: Mutex<Option<(Target, Duration)>>,
    /// When the history was loaded at start.
    loaded: Instant,
    /// Set once the refresh thread was asked for (so the lookup path only reads an atomic).
    armed: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SharedBaseline {
    /// Loads the history from `target` now (an error stops the run before it starts), and with
    /// `refresh` reloads it that often until dropped, from the first lookup on. Long runs
    /// (`live`, `analyze --follow`) see what other sensors wrote since; `analyze` over files
    /// ends long before a refresh matters.
    pub fn start(
        target: Target,
        refresh: Option<Duration>,
    ) -> Result<SharedBaseline, SharedBaselineError> {
        let current = Arc::new(RwLock::new(Arc::new(History::load(&target)?)));
        Ok(SharedBaseline {
            current,
            errors: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            armed: AtomicBool::new(refresh.is_none()),
            loaded: Instant::now(),
            refresh: Mutex::new(refresh.map(|every| (target, every))),
            thread: Mutex::new(None),
        })
    }

    /// Starts the refresh thread, once; called by every lookup, so on the thread that judges.
    /// A thread that cannot start leaves the history as loaded and is counted as a lookup error.
    fn arm(&self) {
        if self.armed.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some((target, every)) = self.refresh.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let (current, errors, stop) =
            (self.current.clone(), self.errors.clone(), self.stop.clone());
        let reload = move |target: &Target| match History::load(target) {
            Ok(h) => {
                if let Ok(mut c) = current.write() {
                    *c = Arc::new(h);
                }
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        };
        if self.loaded.elapsed() >= every {
            reload(&target);
        }
        let refresh = move || {
            while wait(every, &stop) {
                reload(&target);
            }
        };
        match std::thread::Builder::new()
            .name("shared-baseline".into())
            .spawn(refresh)
        {
            Ok(handle) => {
                if let Ok(mut t) = self.thread.lock() {
                    *t = Some(handle);
                }
            }
            Err(e) => {
                tracing::warn!(error = %SharedBaselineError::Thread(e), "shared baseline not refreshed");
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The history loaded last.
    pub fn history(&self) -> Arc<History> {
        self.arm();
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

/// Sleeps `every` in short steps; false as soon as `stop` is raised.
fn wait(every: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + every;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
    !stop.load(Ordering::Relaxed)
}

impl Drop for SharedBaseline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.get_mut().ok().and_then(Option::take) {
            let _ = t.join();
        }
    }
}

impl Baseline for SharedBaseline {
    fn starttls_offered(&self, server: IpAddr) -> Option<Seen> {
        self.history().offered.get(&server).map(|(s, _)| *s)
    }

    fn server_keys(&self, server: IpAddr) -> Vec<(String, Seen)> {
        self.history()
            .keys
            .get(&server)
            .map(|l| l.iter().map(|(k, s, _)| (k.clone(), *s)).collect())
            .unwrap_or_default()
    }

    fn mx_sets(&self, domain: &str) -> Vec<(Vec<String>, Seen)> {
        self.history()
            .mx
            .get(domain)
            .map(|l| l.iter().map(|(m, s, _)| (m.clone(), *s)).collect())
            .unwrap_or_default()
    }

    fn signed_name(&self, name: &str, qtype: &str) -> Option<Seen> {
        self.history()
            .signed
            .get(&(name.to_string(), qtype.to_string()))
            .map(|(s, _)| *s)
    }

    fn sts_ids(&self, domain: &str) -> Vec<(String, Seen)> {
        self.history()
            .sts
            .get(domain)
            .map(|l| l.iter().map(|(i, s, _)| (i.clone(), *s)).collect())
            .unwrap_or_default()
    }

    /// Nothing to do: this run's observations reach ClickHouse through the normal inserts.
    fn save(&mut self, _learned: &Learned) -> Result<SaveStats, StateError> {
        Ok(SaveStats::default())
    }

    fn lookup_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn witness(&self, fact: Fact<'_>) -> Option<Witness> {
        let h = self.history();
        match fact {
            Fact::Offered(ip) => h.offered.get(&ip).map(|(_, w)| w.clone()),
            Fact::Key(ip, key) => h
                .keys
                .get(&ip)?
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, _, w)| w.clone()),
            Fact::Mx(domain, set) => {
                h.mx.get(domain)?
                    .iter()
                    .find(|(s, _, _)| s == set)
                    .map(|(_, _, w)| w.clone())
            }
            Fact::Signed(name, qtype) => h
                .signed
                .get(&(name.to_string(), qtype.to_string()))
                .map(|(_, w)| w.clone()),
            Fact::Sts(domain, id) => h
                .sts
                .get(domain)?
                .iter()
                .find(|(i, _, _)| i == id)
                .map(|(_, _, w)| w.clone()),
        }
    }
}
