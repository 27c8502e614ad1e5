//! Generator of labelled SMTP captures for stripwatch's tests and benchmarks.
//!
//! The analyzer is only as trustworthy as the captures it is tested on, and real downgrade
//! attacks are rare and hard to record. This crate writes small captures of every situation
//! the analyzer must judge (clean STARTTLS, stripped offers, rejected or failed upgrades,
//! injection, fallback, TCP and link-layer irregularities), each with a `NAME.expected.json`
//! saying what a correct analyzer reports, and large deterministic mixed captures for
//! benchmarks. Everything is deterministic: the same call writes the same bytes.
//!
//! It is a crate of its own (with the `stripwatch-synth` binary) so that the product binary and
//! library carry no test generator; it depends on the `stripwatch` library only for the finding
//! kinds (the expected verdicts follow the analyzer's severity order) and, in its tests, for the
//! DNS parser.
//!
//! Layout: [`pcap_writer`] (pcap/pcapng, compression), [`link`] (framing), [`tcp`]
//! (connections and IP), [`fake_tls`] (TLS records), [`smtp_dialog`] (SMTP sessions),
//! [`expected`] (the JSON), [`scenarios`] (the catalogue), `mixed` (the benchmark capture).

use std::path::{Path, PathBuf};

mod dns;
pub mod expected;
pub mod fake_tls;
pub mod link;
mod mixed;
pub mod pcap_writer;
pub mod prng;
pub mod scenarios;
pub mod smtp_dialog;
pub mod tcp;
#[cfg(test)]
mod testutil;

/// Why writing a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The name given to [`write_scenario`] is not one of [`scenario_names`].
    #[error("unknown scenario {0:?} (stripwatch-synth scenarios DIR --list shows the names)")]
    UnknownScenario(String),
    /// Creating or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The expected-results JSON could not be encoded.
    #[error("cannot encode the expected results of {name}: {source}")]
    Json {
        /// The scenario.
        name: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// What [`write_mixed`] wrote, so that a benchmark can report rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixedStats {
    /// Frames written.
    pub packets: u64,
    /// Size of the capture file on disk (after compression, if the name asked for it).
    pub bytes: u64,
    /// SMTP sessions written (background connections not counted).
    pub sessions: u64,
}

/// Writes every scenario as `DIR/NAME.pcap` (or .pcapng/.pcap.gz/.pcap.zst as the scenario
/// says) plus `DIR/NAME.expected.json`; returns the capture paths in catalogue order.
pub fn write_scenarios(dir: &Path) -> Result<Vec<PathBuf>, SynthError> {
    std::fs::create_dir_all(dir).map_err(|source| SynthError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    scenarios::all().iter().map(|s| s.write(dir)).collect()
}

/// The scenario names, for `stripwatch-synth scenarios --list`.
pub fn scenario_names() -> Vec<&'static str> {
    scenarios::all().iter().map(|s| s.name).collect()
}

/// Writes one scenario by name to DIR (same naming); returns the capture's path.
pub fn write_scenario(name: &str, dir: &Path) -> Result<PathBuf, SynthError> {
    let scenario = scenarios::all()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| SynthError::UnknownScenario(name.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| SynthError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    scenario.write(dir)
}

/// A large mixed capture of `sessions` SMTP sessions (plus about one non-SMTP background TCP
/// connection per four sessions) for benchmarks, deterministic for a seed. It streams to
/// disk in constant memory, 64 connections open at once with realistic timing. The file
/// name chooses the format: `.pcapng` for pcapng, a trailing `.gz`/`.zst` for compression,
/// anything else classic pcap; the link type is Ethernet.
pub fn write_mixed(path: &Path, sessions: u64, seed: u64) -> Result<MixedStats, SynthError> {
    mixed::write(path, sessions, seed, Profile::Mixed)
}

/// The shape of a [`write_mixed_profile`] capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// About 22 kB per session: messages up to 256 KB, resumed TLS 1.2, background HTTP(S).
    Mixed,
    /// Session-dense, as a busy MX sees it: about 30 packets and 5 kB per session, nearly all
    /// on port 25, MX, A and TLSA lookups before most deliveries, full TLS 1.2 handshakes with
    /// a certificate (some TLS 1.3, some resumptions), the same share of attacks, no
    /// background traffic.
    Dense,
}

/// [`write_mixed`] with a choice of [`Profile`].
pub fn write_mixed_profile(
    path: &Path,
    sessions: u64,
    seed: u64,
    profile: Profile,
) -> Result<MixedStats, SynthError> {
    mixed::write(path, sessions, seed, profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_public_api_writes_by_name_and_rejects_unknown_names() {
        let dir = std::env::temp_dir().join(format!("stripwatch-api-test-{}", std::process::id()));
        let path = write_scenario("clean-starttls-gzip", &dir).unwrap();
        assert_eq!(path, dir.join("clean-starttls-gzip.pcap.gz"));
        assert!(dir.join("clean-starttls-gzip.expected.json").is_file());
        assert!(matches!(
            write_scenario("no-such-thing", &dir),
            Err(SynthError::UnknownScenario(_))
        ));
        assert!(scenario_names().contains(&"clean-starttls"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
