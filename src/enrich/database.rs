//! One `.mmdb` file, read once into memory and checked at start: an unreadable file, a file
//! that is not a MaxMind DB, or a database of the wrong kind (an ASN file given as the country
//! database) stops the run before any packet is read, instead of producing a day of empty
//! columns.

use super::layout::GeoRecord;
use maxminddb::{MaxMindDbError, Reader, WithinOptions};
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// What a database is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Country codes (`--geoip-country`).
    Country,
    /// AS numbers and organisations (`--geoip-asn`).
    Asn,
}

impl Kind {
    /// The command-line option that names such a database, for error messages.
    pub fn option(self) -> &'static str {
        match self {
            Kind::Country => "--geoip-country",
            Kind::Asn => "--geoip-asn",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Country => {
                "a country database (none of its first records has country.iso_code, registered_country.iso_code, country_code or a two-letter country)"
            }
            Kind::Asn => {
                "an ASN database (none of its first records has autonomous_system_number or asn)"
            }
        }
    }
}

/// A database could not be used; the run does not start.
#[derive(Debug, Error)]
pub enum EnrichError {
    /// The file could not be read.
    #[error("{option} {path}: cannot read: {cause}")]
    Read {
        /// The option that named it.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause (in the message, not a chained source, so it is printed once).
        cause: std::io::Error,
    },
    /// The file is not a MaxMind DB, or its structure is broken.
    #[error("{option} {path}: not a usable MaxMind DB (.mmdb) file: {reason}")]
    Invalid {
        /// The option that named it.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What the reader found, on one line.
        reason: String,
    },
    /// The file is a MaxMind DB but holds the wrong kind of data.
    #[error("{option} {path}: not {noun}; its database_type is {database_type:?}")]
    WrongKind {
        /// The option that named it.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected.
        noun: &'static str,
        /// The type the file declares.
        database_type: String,
    },
}

/// Records read at start to learn the layout and check the kind. Real databases answer on the
/// first record; the bound keeps a huge file of the wrong kind from delaying the start.
const SAMPLE_RECORDS: usize = 1024;

/// Facts about a database, for the run summary.
#[derive(Clone, Debug, Serialize)]
pub struct DatabaseInfo {
    /// The file as given.
    pub path: String,
    /// `database_type` from its metadata (`GeoLite2-Country`, `DBIP-Country-Lite`, ...).
    pub database_type: String,
    /// 4 or 6.
    pub ip_version: u16,
    /// When it was built, seconds since the epoch (stale data gives stale countries).
    pub build_epoch: u64,
    /// `maxmind` (nested) or `flat` (top-level fields).
    pub layout: &'static str,
}

/// A database file in memory, shared when one file serves both kinds.
pub type SharedReader = Arc<Reader<Vec<u8>>>;

/// An opened, checked database.
pub struct Database {
    reader: SharedReader,
    /// What the summary says about it.
    pub info: DatabaseInfo,
}

/// What one address's record says, borrowed from the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer<'a> {
    /// ISO code, when the record has one.
    pub country: Option<&'a str>,
    /// AS number and organisation, when the record has them.
    pub asn: Option<(u32, &'a str)>,
}

/// Reader messages can quote database bytes; errors must stay on one line.
fn one_line(e: &MaxMindDbError) -> String {
    e.to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Database {
    /// Parses a file's bytes (`path` only names it in messages); the structure is checked,
    /// not yet the kind.
    pub fn parse(bytes: Vec<u8>, path: &Path, kind: Kind) -> Result<SharedReader, EnrichError> {
        Reader::from_source(bytes)
            .map(Arc::new)
            .map_err(|e| EnrichError::Invalid {
                option: kind.option(),
                path: path.to_path_buf(),
                reason: one_line(&e),
            })
    }

    /// Checks a database already in memory (`path` only names it in messages).
    pub fn from_bytes(bytes: Vec<u8>, path: &Path, kind: Kind) -> Result<Database, EnrichError> {
        Database::checked(Database::parse(bytes, path, kind)?, path, kind)
    }

    /// Checks that a parsed file answers `kind` questions and learns its layout.
    pub fn checked(reader: SharedReader, path: &Path, kind: Kind) -> Result<Database, EnrichError> {
        let option = kind.option();
        let invalid = |e: &MaxMindDbError| EnrichError::Invalid {
            option,
            path: path.to_path_buf(),
            reason: one_line(e),
        };
        let meta = reader.metadata();
        let mut layout = None;
        let mut first_error = None;
        for item in reader
            .networks(WithinOptions::default().skip_empty_values())
            .map_err(|e| invalid(&e))?
            .take(SAMPLE_RECORDS)
        {
            let found = item.and_then(|r| r.decode::<GeoRecord>());
            match found {
                Ok(Some(rec)) => {
                    layout = match kind {
                        Kind::Country => rec.country().map(|(_, l)| l),
                        Kind::Asn => rec.asn().map(|(_, _, l)| l),
                    };
                    if layout.is_some() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some(layout) = layout else {
            if let Some(e) = first_error {
                return Err(invalid(&e));
            }
            return Err(EnrichError::WrongKind {
                option,
                path: path.to_path_buf(),
                noun: kind.noun(),
                database_type: meta.database_type.clone(),
            });
        };
        let info = DatabaseInfo {
            path: path.display().to_string(),
            database_type: meta.database_type.clone(),
            ip_version: meta.ip_version,
            build_epoch: meta.build_epoch,
            layout: layout.as_str(),
        };
        Ok(Database { reader, info })
    }

    /// Looks `ip` up. `Ok(None)` when the database has no entry for it (or cannot hold it: an
    /// IPv6 address in an IPv4-only file); `Err` when the entry cannot be decoded.
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<Answer<'_>>, MaxMindDbError> {
        let ip = ip.to_canonical();
        if ip.is_ipv6() && self.info.ip_version == 4 {
            return Ok(None);
        }
        let Some(rec) = self.reader.lookup(ip)?.decode::<GeoRecord>()? else {
            return Ok(None);
        };
        let answer = Answer {
            country: rec.country().map(|(c, _)| c),
            asn: rec.asn().map(|(n, o, _)| (n, o)),
        };
        Ok(Some(answer))
    }
}
