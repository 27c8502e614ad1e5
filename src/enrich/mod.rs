//! Country and autonomous system of both ends of every session, finding and DNS record, from
//! MaxMind-format (`.mmdb`) databases, so that reports can say where downgrades happen and
//! whose networks do them.
//!
//! Enrichment runs in the output stage, once per record (not per packet), just before the
//! sinks. Databases are read once at start and checked (`database`); records of several
//! layouts are understood (`layout`); answers are remembered per address in a bounded cache
//! (`cache`). Without a database the six fields stay empty (`""` / `0`).

pub mod cache;
pub mod database;
pub mod layout;

pub use database::{Database, DatabaseInfo, EnrichError, Kind};

use crate::record::DnsRecord;
use crate::record::{Endpoint, Finding, SessionRecord};
use cache::TwoGenCache;
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Addresses remembered per cache generation (at most twice this many are held, about 100
/// bytes each).
pub const CACHE_PER_GENERATION: usize = 32_768;

/// The databases of a run, opened and checked at start; shared read-only with the output stage.
#[derive(Default)]
pub struct Databases {
    country: Vec<Arc<Database>>,
    asn: Vec<Arc<Database>>,
    country_info: Vec<DatabaseInfo>,
    asn_info: Vec<DatabaseInfo>,
}

impl Databases {
    /// Opens every file; the first that cannot be used is the error. A file named for both
    /// kinds (IPinfo Lite holds both) is read once. Several files of one kind are asked in
    /// the order given (ip-location-db ships IPv4 and IPv6 in separate files).
    pub fn open(country: &[PathBuf], asn: &[PathBuf]) -> Result<Databases, EnrichError> {
        let mut dbs = Databases::default();
        let mut by_path = HashMap::new();
        for (kind, paths) in [(Kind::Country, country), (Kind::Asn, asn)] {
            for path in paths {
                let db = Arc::new(open_shared(path, kind, &mut by_path)?);
                match kind {
                    Kind::Country => {
                        dbs.country_info.push(db.info.clone());
                        dbs.country.push(db);
                    }
                    Kind::Asn => {
                        dbs.asn_info.push(db.info.clone());
                        dbs.asn.push(db);
                    }
                }
            }
        }
        Ok(dbs)
    }

    /// No database was given: enrichment is off.
    pub fn is_empty(&self) -> bool {
        self.country.is_empty() && self.asn.is_empty()
    }
}

/// Reads a file named twice (for both kinds) only once and keeps one copy in memory.
fn open_shared(
    path: &Path,
    kind: Kind,
    seen: &mut HashMap<PathBuf, database::SharedReader>,
) -> Result<Database, EnrichError> {
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let reader = match seen.get(&key) {
        Some(r) => r.clone(),
        None => {
            let bytes = std::fs::read(path).map_err(|cause| EnrichError::Read {
                option: kind.option(),
                path: path.to_path_buf(),
                cause,
            })?;
            let r = Database::parse(bytes, path, kind)?;
            seen.insert(key, r.clone());
            r
        }
    };
    Database::checked(reader, path, kind)
}

/// Counters of one kind of look-up.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindStats {
    /// The databases asked, in order.
    pub databases: Vec<DatabaseInfo>,
    /// Addresses looked up (two per record: client and server).
    pub lookups: u64,
    /// Addresses a database had an answer for.
    pub hits: u64,
    /// Addresses no database had an answer for (fields left empty).
    pub misses: u64,
    /// Addresses whose database entry could not be decoded (a damaged file; fields left
    /// empty, not counted as misses).
    pub errors: u64,
}

/// What enrichment did in a run, for `summary.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnrichStats {
    /// A database was given.
    pub enabled: bool,
    /// Country look-ups.
    pub country: KindStats,
    /// AS look-ups.
    pub asn: KindStats,
    /// Address look-ups answered from the cache instead of the databases.
    pub cache_hits: u64,
}

/// What is known about one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct End {
    /// ISO 3166-1 alpha-2, or "".
    pub country: String,
    /// AS number, or 0.
    pub asn: u32,
    /// AS organisation, or "".
    pub as_org: String,
}

/// Outcome of one kind of look-up for one address, kept with the cached answer so the counters
/// mean the same with and without the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Hit,
    Miss,
    Error,
    NotAsked,
}

/// The enrichment stage: owned by the output thread.
pub struct Enricher {
    dbs: Arc<Databases>,
    cache: TwoGenCache<IpAddr, (End, Outcome, Outcome)>,
    stats: EnrichStats,
}

impl Enricher {
    /// A stage over `dbs` with the default cache size.
    pub fn new(dbs: Arc<Databases>) -> Enricher {
        Enricher::with_cache(dbs, CACHE_PER_GENERATION)
    }

    /// A stage with `per_generation` cached addresses (0: no cache, for measuring).
    pub fn with_cache(dbs: Arc<Databases>, per_generation: usize) -> Enricher {
        let stats = EnrichStats {
            enabled: !dbs.is_empty(),
            country: KindStats {
                databases: dbs.country_info.clone(),
                ..KindStats::default()
            },
            asn: KindStats {
                databases: dbs.asn_info.clone(),
                ..KindStats::default()
            },
            cache_hits: 0,
        };
        Enricher {
            dbs,
            cache: TwoGenCache::new(per_generation),
            stats,
        }
    }

    /// What the databases say about `ip` (empty fields when nothing).
    pub fn end(&mut self, ip: IpAddr) -> End {
        let (end, c, a) = if let Some(hit) = self.cache.get(&ip) {
            self.stats.cache_hits += 1;
            hit.clone()
        } else {
            let fresh = self.ask(ip);
            self.cache.insert(ip, fresh.clone());
            fresh
        };
        count(&mut self.stats.country, c);
        count(&mut self.stats.asn, a);
        end
    }

    fn ask(&self, ip: IpAddr) -> (End, Outcome, Outcome) {
        let mut end = End::default();
        let mut country = if self.dbs.country.is_empty() {
            Outcome::NotAsked
        } else {
            Outcome::Miss
        };
        for db in &self.dbs.country {
            match db.lookup(ip) {
                Ok(Some(answer)) => {
                    if let Some(c) = answer.country {
                        end.country = c.to_string();
                        country = Outcome::Hit;
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => country = Outcome::Error,
            }
        }
        let mut asn = if self.dbs.asn.is_empty() {
            Outcome::NotAsked
        } else {
            Outcome::Miss
        };
        for db in &self.dbs.asn {
            match db.lookup(ip) {
                Ok(Some(answer)) => {
                    if let Some((n, org)) = answer.asn {
                        end.asn = n;
                        end.as_org = layout::clean_org(org);
                        asn = Outcome::Hit;
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => asn = Outcome::Error,
            }
        }
        (end, country, asn)
    }

    /// Fills the enrichment of a session's two ends and of its findings (a finding takes its
    /// session's ends).
    pub fn session(&mut self, rec: &mut SessionRecord) {
        self.ends(&mut rec.client, &mut rec.server, &mut rec.finding_details);
    }

    /// Fills the enrichment of a DNS transaction's two ends (client: the querier; server: the
    /// resolver asked) and of its findings.
    pub fn dns(&mut self, rec: &mut DnsRecord) {
        self.ends(&mut rec.client, &mut rec.server, &mut rec.finding_details);
    }

    fn ends(&mut self, client: &mut Endpoint, server: &mut Endpoint, findings: &mut [Finding]) {
        if !self.stats.enabled {
            return;
        }
        let found_client = self.end(client.ip);
        let found_server = self.end(server.ip);
        for f in findings {
            fill(&mut f.client, &found_client);
            fill(&mut f.server, &found_server);
        }
        fill(client, &found_client);
        fill(server, &found_server);
    }

    /// The counters so far.
    pub fn stats(&self) -> &EnrichStats {
        &self.stats
    }

    /// Addresses held in the cache now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

fn count(k: &mut KindStats, o: Outcome) {
    match o {
        Outcome::NotAsked => return,
        Outcome::Hit => k.hits += 1,
        Outcome::Miss => k.misses += 1,
        Outcome::Error => k.errors += 1,
    }
    k.lookups += 1;
}

fn fill(endpoint: &mut Endpoint, found: &End) {
    endpoint.country.clone_from(&found.country);
    endpoint.asn = found.asn;
    endpoint.as_org.clone_from(&found.as_org);
}

impl EnrichStats {
    /// One line for the human summary.
    pub fn render_line(&self) -> String {
        if !self.enabled {
            return "enrichment: off (no --geoip-country / --geoip-asn database given)".into();
        }
        let part = |name: &str, k: &KindStats| {
            if k.databases.is_empty() {
                format!("{name} off")
            } else {
                let mut s = format!("{name} {} of {} addresses", k.hits, k.lookups);
                if k.errors > 0 {
                    s.push_str(&format!(" ({} unreadable entries)", k.errors));
                }
                s
            }
        };
        format!(
            "enrichment: {}, {}",
            part("country", &self.country),
            part("asn", &self.asn)
        )
    }
}

#[cfg(test)]
mod tests;
