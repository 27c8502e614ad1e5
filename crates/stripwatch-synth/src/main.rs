//! The `stripwatch-synth` command line: writes the labelled scenario captures and the large
//! mixed benchmark capture. A binary of its own so that the analyzer ships without the test
//! generator.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Writes labelled scenario captures or a large mixed capture for stripwatch's tests and
/// benchmarks.
#[derive(Parser)]
#[command(name = "stripwatch-synth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every scenario (or the named ones) with its expected results, into DIR.
    Scenarios {
        /// Output directory.
        dir: PathBuf,
        /// Only these scenarios.
        #[arg(long = "scenario")]
        only: Vec<String>,
        /// List the scenario names and exit.
        #[arg(long)]
        list: bool,
    },
    /// A large mixed capture for benchmarks.
    Mixed {
        /// Output pcap file.
        file: PathBuf,
        /// SMTP sessions to generate.
        #[arg(long, default_value_t = 10_000)]
        sessions: u64,
        /// Seed for the deterministic generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Session-dense: ~30 packets and ~5 kB per session, nearly all on port 25, MX/A/TLSA
        /// lookups, full TLS handshakes with certificates, no background traffic.
        #[arg(long)]
        dense: bool,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("stripwatch-synth: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Scenarios { dir, only, list } => {
            if list {
                for name in stripwatch_synth::scenario_names() {
                    println!("{name}");
                }
                return Ok(());
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let written = if only.is_empty() {
                stripwatch_synth::write_scenarios(&dir)?
            } else {
                let mut v = Vec::new();
                for name in &only {
                    v.push(stripwatch_synth::write_scenario(name, &dir)?);
                }
                v
            };
            eprintln!(
                "wrote {} scenario captures to {}",
                written.len(),
                dir.display()
            );
        }
        Command::Mixed {
            file,
            sessions,
            seed,
            dense,
        } => {
            let profile = if dense {
                stripwatch_synth::Profile::Dense
            } else {
                stripwatch_synth::Profile::Mixed
            };
            let stats = stripwatch_synth::write_mixed_profile(&file, sessions, seed, profile)?;
            eprintln!(
                "wrote {}: {} sessions, {} packets, {:.1} MB",
                file.display(),
                stats.sessions,
                stats.packets,
                stats.bytes as f64 / 1e6
            );
        }
    }
    Ok(())
}
